package storetest

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// testCursors: a list's cursor is opaque. It tells nothing of a record
// the caller was not given, even when the list stopped after records its
// filter dropped, and a cursor not answered by the same list (garbled,
// altered, spelled as a record's position, another list's) is refused on
// the field "cursor" rather than read as a place to start.
func testCursors(t *testing.T, newEnv func(*testing.T) *env) {
	t.Run("filtered_records_stay_out_of_the_cursor", func(t *testing.T) {
		// An agent lists their own sessions on a busy customer: the store
		// walks the customer's log, every agent's sessions, and keeps the
		// agent's.
		e := newEnv(t)
		must(t, begin(e, newSession(e, "imp_alice_own", "alice", "busy")))
		var hidden []string
		for i := range pastAnyScan {
			e.clock.Advance(time.Millisecond)
			id := fmt.Sprintf("imp_bob_secret_%05d", i)
			must(t, begin(e, newSession(e, id, fmt.Sprintf("bob%d", i%50), "busy")))
			hidden = append(hidden, id, strconv.FormatInt(e.now().UnixNano(), 10))
		}
		for _, f := range []sidecar.SessionFilter{
			{Actor: "alice", Customer: "busy"},
			{Actor: "alice", Customer: "busy", Page: sidecar.Page{Limit: 1}},
		} {
			var got []string
			for pages := 0; ; pages++ {
				ss, next, err := e.s.ListSessions(e.ctx, f)
				must(t, err)
				got = append(got, sessionIDs(ss)...)
				if leak, ok := Reveals(next, hidden...); ok {
					t.Fatalf("%+v: page %d's cursor %q reveals %q, a session not listed", f, pages, next, leak)
				}
				if next == "" {
					break
				}
				if pages > pastAnyScan {
					t.Fatal("cursor does not advance")
				}
				f.Cursor = next
			}
			if !slices.Equal(got, []string{"imp_alice_own"}) {
				t.Errorf("%+v: listed %v, want [imp_alice_own]", f, got)
			}
		}
	})
	t.Run("foreign_cursors_refused", func(t *testing.T) {
		e := newEnv(t)
		var started []*sidecar.Session
		for _, id := range []string{"s1", "s2", "s3"} {
			ss := newSession(e, id, "alice", "acme")
			must(t, begin(e, ss))
			started = append(started, ss)
			e.clock.Advance(time.Millisecond)
		}
		must(t, begin(e, newSession(e, "other", "bob", "acme")))
		f := sidecar.SessionFilter{Actor: "alice", Page: sidecar.Page{Limit: 1}}
		_, next, err := e.s.ListSessions(e.ctx, f)
		must(t, err)
		if next == "" {
			t.Fatal("first of three sessions answered no cursor")
		}
		// Where the list would resume: before s3, at s2. Spelled as the
		// stores order their logs, raw or in base64.
		s2 := started[1]
		at := fmt.Sprintf("%020d:", s2.StartedAt.UnixNano())
		positions := []string{at + s2.ID, at + s2.ID + "\x00" + s2.Customer}
		cases := map[string]sidecar.SessionFilter{
			"garbled":        {Actor: "alice", Page: sidecar.Page{Cursor: "not-a-cursor"}},
			"altered":        {Actor: "alice", Page: sidecar.Page{Cursor: alter(next)}},
			"truncated":      {Actor: "alice", Page: sidecar.Page{Cursor: next[:len(next)-2]}},
			"another_list":   {Actor: "bob", Page: sidecar.Page{Cursor: next}},
			"other_customer": {Actor: "alice", Customer: "acme", Page: sidecar.Page{Cursor: next}},
		}
		for i, p := range positions {
			cases[fmt.Sprintf("position_%d_raw", i)] = sidecar.SessionFilter{Actor: "alice", Page: sidecar.Page{Cursor: p}}
			cases[fmt.Sprintf("position_%d_base64", i)] = sidecar.SessionFilter{Actor: "alice",
				Page: sidecar.Page{Cursor: base64.RawURLEncoding.EncodeToString([]byte(p))}}
		}
		for name, f := range cases {
			t.Run(name, func(t *testing.T) {
				ss, _, err := e.s.ListSessions(e.ctx, f)
				if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "cursor" {
					t.Fatalf("listed %v, %v; want EINVALID on cursor", sessionIDs(ss), err)
				}
			})
		}
		t.Run("requests", func(t *testing.T) {
			must(t, e.s.CreateRequest(e.ctx, newRequest(e, "r1", "p1", "acme")))
			for _, c := range []string{"not-a-cursor", next, base64.RawURLEncoding.EncodeToString([]byte(at + "r1\x00acme"))} {
				rs, _, err := e.s.ListRequests(e.ctx, sidecar.RequestFilter{Customer: "acme", Page: sidecar.Page{Cursor: c}})
				if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "cursor" {
					t.Fatalf("cursor %q: listed %d, %v; want EINVALID on cursor", c, len(rs), err)
				}
			}
		})
		t.Run("assignments", func(t *testing.T) {
			must(t, e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "c1", Reseller: "r1", Domain: "eu.r1"}))
			must(t, e.s.PutAssignment(e.ctx, &sidecar.Assignment{Customer: "c2", Reseller: "r1", Domain: "eu.r1"}))
			for _, c := range []string{"not-a-cursor", next, "c1"} {
				as, _, err := e.s.AssignmentsByDomain(e.ctx, "eu.r1", sidecar.Page{Cursor: c})
				if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "cursor" {
					t.Fatalf("cursor %q: listed %d, %v; want EINVALID on cursor", c, len(as), err)
				}
			}
		})
	})
	t.Run("cursor_resumes_on_another_replica", func(t *testing.T) {
		e := newEnv(t)
		var want []string
		for i := range 5 {
			id := fmt.Sprintf("s%d", i)
			must(t, begin(e, newSession(e, id, "alice", "acme")))
			want = append([]string{id}, want...)
			e.clock.Advance(time.Millisecond)
		}
		f := sidecar.SessionFilter{Actor: "alice", Page: sidecar.Page{Limit: 2}}
		var got []string
		for pages, s := 0, e.s; ; pages++ {
			ss, next, err := s.ListSessions(e.ctx, f)
			must(t, err)
			got = append(got, sessionIDs(ss)...)
			if next == "" {
				break
			}
			if pages > len(want) {
				t.Fatal("cursor does not advance")
			}
			f.Cursor = next
			if s == e.s {
				s = e.peer
			} else {
				s = e.s
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("listed %v, want %v", got, want)
		}
	})
}

// alter changes one character of a cursor, keeping it base64.
func alter(c string) string {
	b := []byte(c)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// Reveals reports the first of secrets that cursor holds in any reading
// of it: as sent, decoded from base64 in either alphabet, padded or not,
// or from hex.
func Reveals(cursor string, secrets ...string) (string, bool) {
	readings := []string{cursor}
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(cursor); err == nil {
			readings = append(readings, string(b))
		}
	}
	if b, err := hex.DecodeString(cursor); err == nil {
		readings = append(readings, string(b))
	}
	for _, r := range readings {
		for _, s := range secrets {
			if s != "" && strings.Contains(r, s) {
				return s, true
			}
		}
	}
	return "", false
}
