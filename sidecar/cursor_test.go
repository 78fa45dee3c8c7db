package sidecar_test

import (
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

func newCursors(t testing.TB) *sidecar.Cursors {
	t.Helper()
	c, err := sidecar.NewCursors(sidecar.NewCursorKey())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCursorsRoundTrip(t *testing.T) {
	c := newCursors(t)
	for name, pos := range map[string]string{
		"log_member": "01700000000000000005:s1\x00acme",
		"odd_ids":    "00000000000000000000:id:with:colons\x00cust/with\x00nul",
		"customer":   "c1",
	} {
		t.Run(name, func(t *testing.T) {
			scope := sidecar.SessionFilter{Actor: "alice"}.CursorScope()
			sealed := c.Seal(scope, pos)
			if strings.Contains(sealed, "acme") || sealed == c.Seal(scope, pos) {
				t.Errorf("cursor %q is not opaque", sealed)
			}
			if got, err := c.Open(scope, sealed); err != nil || got != pos {
				t.Fatalf("opened %q, %v; want %q", got, err, pos)
			}
		})
	}
}

func TestCursorsOpenOnlyTheirList(t *testing.T) {
	c := newCursors(t)
	from := time.Unix(1700000000, 0)
	f := sidecar.SessionFilter{Actor: "alice", Customer: "acme", LiveOnly: true, From: from}
	sealed := c.Seal(f.CursorScope(), "pos")
	samePageSize := f
	samePageSize.Limit = 7
	if _, err := c.Open(samePageSize.CursorScope(), sealed); err != nil {
		t.Fatalf("another page size refused: %v", err)
	}
	cases := map[string]struct {
		c     *sidecar.Cursors
		scope string
	}{
		"another_actor":    {c, sidecar.SessionFilter{Actor: "bob", Customer: "acme", LiveOnly: true, From: from}.CursorScope()},
		"not_live_only":    {c, sidecar.SessionFilter{Actor: "alice", Customer: "acme", From: from}.CursorScope()},
		"another_from":     {c, sidecar.SessionFilter{Actor: "alice", Customer: "acme", LiveOnly: true}.CursorScope()},
		"fields_shifted":   {c, sidecar.SessionFilter{Actor: "alice\"\"acme", LiveOnly: true, From: from}.CursorScope()},
		"requests":         {c, sidecar.RequestFilter{Customer: "alice", PartnerOrg: "acme"}.CursorScope()},
		"another_key":      {newCursors(t), f.CursorScope()},
		"assignments_list": {c, sidecar.AssignmentsScope("alice")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got, err := tc.c.Open(tc.scope, sealed); sidecar.ErrorField(err) != "cursor" {
				t.Fatalf("opened %q, %v; want EINVALID on cursor", got, err)
			}
		})
	}
}

func TestNewCursorsRefusesAShortKey(t *testing.T) {
	if _, err := sidecar.NewCursors(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
}

func FuzzCursorsOpen(f *testing.F) {
	c := newCursors(f)
	scope := sidecar.AssignmentsScope("eu")
	f.Add(c.Seal(scope, "c1"))
	for _, seed := range []string{"", "x", "!!!", "AAAA", "MDAwMDAwMDAwMDAwMDAwMDAwMDA6"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		pos, err := c.Open(scope, cursor)
		if err != nil {
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "cursor" {
				t.Fatalf("error does not name the cursor: %v", err)
			}
			return
		}
		if pos != "c1" {
			t.Fatalf("opened %q from a cursor never sealed", pos)
		}
	})
}
