package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Filter selects records; empty fields match everything.
type Filter struct {
	Actor   string
	Subject string
	Result  string // allow or deny
	Mode    string // impersonation, partner, reseller, or "none" for no delegation
}

// Validate checks the values an operator typed.
func (f Filter) Validate() error {
	switch f.Result {
	case "", ResultAllow, ResultDeny:
	default:
		return sidecar.Invalid("result", "must be allow or deny, not %q", f.Result)
	}
	switch f.Mode {
	case "", "none", sidecar.ModeImpersonation, sidecar.ModePartner, sidecar.ModeReseller:
	default:
		return sidecar.Invalid("mode", "must be impersonation, partner, reseller or none, not %q", f.Mode)
	}
	return nil
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *Record) bool {
	switch {
	case f.Actor != "" && r.Actor != f.Actor,
		f.Subject != "" && r.Subject != f.Subject,
		f.Result != "" && r.Result != f.Result,
		f.Mode == "none" && r.Mode != "",
		f.Mode != "" && f.Mode != "none" && r.Mode != f.Mode:
		return false
	}
	return true
}

// TailOptions say which stream to follow and from where.
type TailOptions struct {
	Stream string
	// From is the entry id to start after: "$" (default) for new entries
	// only, "0" for the whole stream. "$" is the newest entry when Tail
	// first reaches Redis (if Redis is down when Tail starts, entries
	// written before Tail's first successful read are not new to it);
	// from then on a reconnect skips nothing.
	From   string
	Filter Filter
	// Block is how long one XREAD waits; the loop goes on until ctx ends.
	Block time.Duration
	// StopAtEnd returns once the stream holds nothing newer, instead of
	// waiting for new entries: reading history.
	StopAtEnd bool
	// OnError hears of connection failures; Tail keeps retrying them.
	OnError func(error)
}

// Tail follows the stream with XREAD BLOCK and calls fn for each record
// that matches, in stream order, until ctx ends or fn returns an error.
// Entries that are not decision records are skipped. While Redis cannot be
// reached, or answers that it is loading its data, Tail retries; another
// error Redis answers with ends it.
func Tail(ctx context.Context, client redis.UniversalClient, opt TailOptions, fn func(id string, r *Record) error) error {
	if err := opt.Filter.Validate(); err != nil {
		return err
	}
	last := opt.From
	if last == "" {
		last = "$"
	}
	block := opt.Block
	if block <= 0 {
		block = 5 * time.Second
	}
	retry := min(block, time.Second)
	if opt.StopAtEnd {
		block = -1 // XREAD without BLOCK: nil once nothing is newer
	}
	onErr := opt.OnError
	for {
		if last == "$" {
			// "$" means "after the newest entry" anew on every XREAD: after
			// a reconnect, entries added during the gap would be skipped.
			// Pin it to the newest entry's id as soon as Redis answers.
			if id, err := newestID(ctx, client, opt.Stream); err == nil {
				last = id
			}
		}
		streams, err := client.XRead(ctx, &redis.XReadArgs{Streams: []string{opt.Stream, last}, Count: 100, Block: block}).Result()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, redis.Nil) {
			if opt.StopAtEnd {
				return nil
			}
			continue
		}
		var rerr redis.Error
		if errors.As(err, &rerr) && !transient(err) {
			// The server answered with an error (wrong type, no access):
			// waiting will not fix it.
			return sidecar.Unavailable("read stream "+opt.Stream, err)
		}
		if err != nil {
			// Connection trouble, or a Redis loading its data: it may be
			// restarting. Keep following.
			if onErr != nil {
				onErr(err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retry):
			}
			continue
		}
		for _, s := range streams {
			for _, m := range s.Messages {
				last = m.ID
				raw, ok := m.Values[RecordField].(string)
				if !ok {
					continue
				}
				var r Record
				if json.Unmarshal([]byte(raw), &r) != nil || !opt.Filter.Match(&r) {
					continue
				}
				if err := fn(m.ID, &r); err != nil {
					return err
				}
			}
		}
	}
}

// transient reports whether Redis answered with an error that passes on
// its own: a restarted Redis reading its data back (LOADING), a replica
// without its primary (MASTERDOWN), a cluster between states (CLUSTERDOWN,
// TRYAGAIN). The tail waits those out as it waits out a lost connection.
func transient(err error) bool {
	return redis.IsLoadingError(err) || redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err)
}

// newestID is the id of the stream's newest entry, or 0-0 when it is empty.
func newestID(ctx context.Context, client redis.UniversalClient, stream string) (string, error) {
	msgs, err := client.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// FormatLine renders a record as one line for a terminal:
//
//	time result status method host+path actor→subject mode/level session reason latency trace
//
// Every value passes through term: record fields come from requests and
// tokens (a subject claim can hold ESC or CR), and raw they could drive
// the operator's terminal or forge another line or field.
func FormatLine(r *Record) string {
	var b strings.Builder
	b.WriteString(r.Time.Format("2006-01-02T15:04:05.000Z07:00"))
	b.WriteByte(' ')
	b.WriteString(term(strings.ToUpper(r.Result)))
	if r.HTTPStatus != 0 {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(r.HTTPStatus))
	}
	fmt.Fprintf(&b, " %s %s", term(orDash(r.Method)), term(r.Host+r.Path))
	if r.Actor != "" || r.Subject != "" {
		if r.Mode != "" {
			fmt.Fprintf(&b, " actor=%s subject=%s", term(orDash(r.Actor)), term(orDash(r.Subject)))
		} else {
			fmt.Fprintf(&b, " user=%s", term(orDash(r.Actor)))
		}
	}
	for _, f := range [...]struct{ key, v string }{
		{"mode", r.Mode}, {"level", r.Level}, {"session", r.SessionID}, {"reason", r.Reason},
		{"attempted_on_behalf_of", r.AttemptedOnBehalfOf}, {"attempted_session", r.AttemptedSession}, {"attempted_session_actor", r.AttemptedSessionActor},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.key, term(f.v))
		}
	}
	if r.Error != "" {
		fmt.Fprintf(&b, " error=%q", r.Error)
	}
	if r.DryRun {
		b.WriteString(" dry_run")
	}
	fmt.Fprintf(&b, " %.3fms", r.LatencyMS)
	if r.TraceID != "" {
		fmt.Fprintf(&b, " trace=%s", term(r.TraceID))
	}
	fmt.Fprintf(&b, " id=%s", term(r.DecisionID))
	return b.String()
}

// JSONLine is r as one line of JSON for a terminal. encoding/json escapes
// C0 controls but writes DEL, the C1 controls (U+0080-U+009F) and the bidi
// controls and marks raw: a terminal may read U+009B as CSI, and U+202E
// reverses what follows. They are written as \u escapes, as the sinks
// write them (displayEscaped), which is still the same JSON since they
// can only stand inside a string.
func JSONLine(r *Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(escapeDisplay(b), '\n'), nil
}

// term returns s as it is when it is plain printable text without spaces,
// quotes or backslashes, and Go-quoted otherwise ("al\x1b[31mice"): a
// control, non-printing (bidi override) or invalid UTF-8 rune is written
// as an escape, and a quoted value cannot pass for two fields.
func term(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '\\' || r == utf8.RuneError || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
