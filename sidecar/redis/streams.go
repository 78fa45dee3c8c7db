package redis

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Assignment keys:
//
//	{cust:F}:assign        the assignment (JSON) of every customer id whose
//	                       sidecar.FoldID is F; the record keeps the spelling
//	                       it was assigned under
//	{dom:D}:customers      sorted set of D's customers as spelled in their
//	                       records (lexicographic)
//
// An id already in folded form (lower-case ASCII, the common case) has
// the key it had before ids were folded.
//
// Streams: <prefix>:events and <prefix>:audit.

// assignBatch bounds one bulk-load round trip.
const assignBatch = 500

func (s *Store) assignKey(c string) string { return s.cust(sidecar.FoldID(c), "assign") }
func (s *Store) domainKey(d string) string { return s.tagged("dom", d, "customers") }
func (s *Store) streamKey(n string) string { return s.prefix + ":" + n }

func (s *Store) GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	raw, err := s.c.Get(ctx, s.assignKey(customer)).Result()
	if err != nil {
		return nil, rerr(err, "assignment")
	}
	return decode[sidecar.Assignment](raw)
}

// GetAssignments pipelines GETs, assignBatch at a time: the customers'
// keys lie in different Cluster slots, so one MGET cannot read them; a
// pipeline is split by node (as getMany does elsewhere).
func (s *Store) GetAssignments(ctx context.Context, customers []string) ([]*sidecar.Assignment, error) {
	out := make([]*sidecar.Assignment, 0, len(customers))
	for start := 0; start < len(customers); start += assignBatch {
		batch := customers[start:min(start+assignBatch, len(customers))]
		keys := make([]string, len(batch))
		for i, c := range batch {
			keys[i] = s.assignKey(c)
		}
		raws, err := s.getMany(ctx, keys)
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			if raw == "" {
				out = append(out, nil)
				continue
			}
			a, err := decode[sidecar.Assignment](raw)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

func (s *Store) PutAssignment(ctx context.Context, a *sidecar.Assignment) error {
	_, err := s.PutAssignments(ctx, []sidecar.Assignment{*a})
	return err
}

// PutAssignments validates everything first, so a malformed entry stores
// nothing; then it writes in batches.
func (s *Store) PutAssignments(ctx context.Context, as []sidecar.Assignment) (int, error) {
	for i := range as {
		if err := as[i].Validate(); err != nil {
			return 0, err
		}
	}
	stored := 0
	for start := 0; start < len(as); start += assignBatch {
		batch := as[start:min(start+assignBatch, len(as))]
		keys := make([]string, len(batch))
		for i := range batch {
			keys[i] = s.assignKey(batch[i].Customer)
		}
		olds, err := s.getMany(ctx, keys)
		if err != nil {
			return stored, err
		}
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := range batch {
				a := &batch[i]
				p.Set(ctx, keys[i], encode(a), 0)
				p.ZAdd(ctx, s.domainKey(a.Domain), goredis.Z{Member: a.Customer})
				if olds[i] == "" {
					continue
				}
				if old, err := decode[sidecar.Assignment](olds[i]); err == nil && (old.Domain != a.Domain || old.Customer != a.Customer) {
					p.ZRem(ctx, s.domainKey(old.Domain), old.Customer)
				}
			}
			return nil
		})
		if err != nil {
			return stored, unavailable(err)
		}
		inv := make([]string, len(batch))
		for i := range batch {
			inv[i] = sidecar.AssignmentKey(batch[i].Customer)
		}
		s.publish(ctx, inv...)
		stored += len(batch)
	}
	return stored, nil
}

// changeAssignmentScript replaces or removes an assignment only while the
// customer is still in the domain the caller read.
// KEYS: the assignment. ARGV: that domain (empty when unassigned), the new
// assignment JSON (empty removes it). Returns 0 when the customer is
// elsewhere now; when applied, {1, the spelling the replaced record had
// (empty when unassigned)}.
var changeAssignmentScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
local current, spelled = '', ''
if v then
  local old = cjson.decode(v)
  current, spelled = old['domain'] or '', old['customer'] or ''
end
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return {1, spelled}
`)

// ChangeAssignments checks and writes each assignment in one script on its
// key, so no other write lands in between. The domain indexes live in
// other slots and only point at records: a listing reads the record and
// skips (and drops) a customer it no longer names. So the new domain's
// entry is added before the record changes and the old one's dropped
// after: a fault between them leaves a pointer the listing skips, never
// an assignment other than one policy judged.
func (s *Store) ChangeAssignments(ctx context.Context, cs []sidecar.AssignmentChange) ([]int, error) {
	for i := range cs {
		if err := cs[i].Validate(); err != nil {
			return nil, err
		}
	}
	var conflicts []int
	for start := 0; start < len(cs); start += assignBatch {
		batch := cs[start:min(start+assignBatch, len(cs))]
		_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, c := range batch {
				if c.To != nil {
					p.ZAdd(ctx, s.domainKey(c.To.Domain), goredis.Z{Member: c.Customer})
				}
			}
			return nil
		})
		if err != nil {
			return conflicts, unavailable(err)
		}
		results := make([]*goredis.Cmd, len(batch))
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, c := range batch {
				to := ""
				if c.To != nil {
					to = encode(c.To)
				}
				results[i] = changeAssignmentScript.Eval(ctx, p, []string{s.assignKey(c.Customer)}, c.From, to)
			}
			return nil
		})
		if err != nil {
			return conflicts, unavailable(err)
		}
		var applied []string
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, c := range batch {
				reply, _ := results[i].Slice()
				if len(reply) == 0 {
					conflicts = append(conflicts, start+i)
					continue
				}
				applied = append(applied, sidecar.AssignmentKey(c.Customer))
				spelled := c.Customer
				if len(reply) > 1 {
					spelled, _ = reply[1].(string)
				}
				if c.From != "" && (c.To == nil || c.To.Domain != c.From || c.To.Customer != spelled) {
					p.ZRem(ctx, s.domainKey(c.From), spelled)
				}
			}
			return nil
		})
		if err != nil {
			// The changes stand; only a pointer the listing skips is left.
			s.log.Warn("drop moved assignments from their old domain index", "err", err)
		}
		s.publish(ctx, applied...)
	}
	return conflicts, nil
}

func (s *Store) DeleteAssignment(ctx context.Context, customer string) error {
	raw, err := s.c.GetDel(ctx, s.assignKey(customer)).Result()
	if err != nil {
		return rerr(err, "assignment")
	}
	if old, err := decode[sidecar.Assignment](raw); err == nil {
		s.c.ZRem(ctx, s.domainKey(old.Domain), old.Customer)
	}
	s.publish(ctx, sidecar.AssignmentKey(customer))
	return nil
}

func (s *Store) AssignmentsByDomain(ctx context.Context, domain string, p sidecar.Page) ([]sidecar.Assignment, string, error) {
	n := p.N()
	lo := "-"
	if p.Cursor != "" {
		lo = "(" + p.Cursor
	}
	var out []sidecar.Assignment
	index := s.domainKey(domain)
	for scanned := 0; scanned < scanLimit; {
		members, err := s.c.ZRangeByLex(ctx, index, &goredis.ZRangeBy{Min: lo, Max: "+", Count: int64(n + 1)}).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		if len(members) == 0 {
			return out, "", nil
		}
		keys := make([]string, len(members))
		for i, m := range members {
			keys[i] = s.assignKey(m)
		}
		raws, err := s.getMany(ctx, keys)
		if err != nil {
			return nil, "", err
		}
		for i, raw := range raws {
			scanned++
			if len(out) == n {
				return out, out[n-1].Customer, nil // members[i] exists: another page follows
			}
			var a *sidecar.Assignment
			if raw != "" {
				if a, err = decode[sidecar.Assignment](raw); err != nil {
					return nil, "", err
				}
			}
			if a == nil || a.Domain != domain || a.Customer != members[i] {
				s.c.ZRem(ctx, index, members[i]) // moved, respelled or deleted meanwhile
				continue
			}
			out = append(out, *a)
		}
		if len(members) < n+1 {
			return out, "", nil
		}
		lo = "(" + members[len(members)-1]
	}
	if len(out) > 0 {
		return out, out[len(out)-1].Customer, nil
	}
	return out, "", nil
}

// ---- streams ---------------------------------------------------------------

func validStreamID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return ok && err1 == nil && err2 == nil
}

// streamFields are the flat fields of one stream entry, so consumers
// (the host's mailer) can read them without Deputy's types.
func streamFields(typ string, t time.Time, customer, actor string, extra map[string]string, data map[string]string) map[string]any {
	f := map[string]any{"type": typ, "time": t.UTC().Format(time.RFC3339Nano)}
	if customer != "" {
		f["customer"] = customer
	}
	if actor != "" {
		f["actor"] = actor
	}
	for k, v := range extra {
		if v != "" {
			f[k] = v
		}
	}
	if len(data) > 0 {
		b, _ := json.Marshal(data)
		f["data"] = string(b)
	}
	return f
}

func (s *Store) xadd(ctx context.Context, stream string, maxLen int64, fields map[string]any) (string, error) {
	id, err := s.c.XAdd(ctx, &goredis.XAddArgs{Stream: s.streamKey(stream), MaxLen: maxLen, Approx: true, Values: fields}).Result()
	if err != nil {
		return "", unavailable(err)
	}
	return id, nil
}

func (s *Store) AppendEvent(ctx context.Context, e *sidecar.Event) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	id, err := s.xadd(ctx, "events", s.cfg.EventsMaxLen, streamFields(e.Type, e.Time, e.Customer, e.Actor, nil, e.Data))
	if err != nil {
		return err
	}
	e.ID = id
	return nil
}

func (s *Store) AppendAudit(ctx context.Context, a *sidecar.AuditEntry) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if a.Time.IsZero() {
		a.Time = s.now()
	}
	id, err := s.xadd(ctx, "audit", s.cfg.AuditMaxLen, streamFields(a.Action, a.Time, a.Customer, a.Actor,
		map[string]string{"target": a.Target, "outcome": a.Outcome}, a.Data))
	if err != nil {
		return err
	}
	a.ID = id
	return nil
}

type entry struct {
	id, typ, customer, actor, target, outcome string
	time                                      time.Time
	data                                      map[string]string
}

func parseEntry(m goredis.XMessage) entry {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := entry{id: m.ID, typ: str("type"), customer: str("customer"), actor: str("actor"), target: str("target"), outcome: str("outcome")}
	e.time, _ = time.Parse(time.RFC3339Nano, str("time"))
	if d := str("data"); d != "" {
		_ = json.Unmarshal([]byte(d), &e.data)
	}
	return e
}

// readStream returns matching entries after the cursor, oldest first,
// examining at most scanLimit entries; "" cursor at the end of the stream.
func (s *Store) readStream(ctx context.Context, stream string, f sidecar.StreamFilter) ([]entry, string, error) {
	start := "-"
	if f.Cursor != "" {
		if !validStreamID(f.Cursor) {
			return nil, "", sidecar.Invalid("cursor", "malformed cursor")
		}
		start = "(" + f.Cursor
	}
	n := f.N()
	var out []entry
	for scanned := 0; scanned < scanLimit; {
		batch := int64(max(2*n, 100))
		msgs, err := s.c.XRangeN(ctx, s.streamKey(stream), start, "+", batch).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		for i, m := range msgs {
			scanned++
			e := parseEntry(m)
			if (f.Type == "" || f.Type == e.typ) && (f.Customer == "" || f.Customer == e.customer) &&
				(f.Actor == "" || f.Actor == e.actor) && (f.From.IsZero() || !e.time.Before(f.From)) &&
				(f.To.IsZero() || e.time.Before(f.To)) {
				out = append(out, e)
			}
			if len(out) == n || scanned == scanLimit {
				if i == len(msgs)-1 && int64(len(msgs)) < batch {
					return out, "", nil
				}
				return out, m.ID, nil
			}
		}
		if int64(len(msgs)) < batch {
			return out, "", nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return out, "", nil
}

func (s *Store) ReadEvents(ctx context.Context, f sidecar.StreamFilter) ([]sidecar.Event, string, error) {
	es, next, err := s.readStream(ctx, "events", f)
	if err != nil {
		return nil, "", err
	}
	out := make([]sidecar.Event, len(es))
	for i, e := range es {
		out[i] = sidecar.Event{ID: e.id, Type: e.typ, Time: e.time, Customer: e.customer, Actor: e.actor, Data: e.data}
	}
	return out, next, nil
}

func (s *Store) ReadAudit(ctx context.Context, f sidecar.StreamFilter) ([]sidecar.AuditEntry, string, error) {
	es, next, err := s.readStream(ctx, "audit", f)
	if err != nil {
		return nil, "", err
	}
	out := make([]sidecar.AuditEntry, len(es))
	for i, e := range es {
		out[i] = sidecar.AuditEntry{ID: e.id, Action: e.typ, Time: e.time, Customer: e.customer, Actor: e.actor,
			Target: e.target, Outcome: e.outcome, Data: e.data}
	}
	return out, next, nil
}
