package redis

import (
	"context"
	"encoding/json"
	"slices"
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
//	{cust:F}:assign:removed  the assignment as the last change removing it
//	                       left it, for RemovedAssignment; expires
//	                       sidecar.AppendOnceWindow after the removal
//	{cust:F}:assign:kept   sorted set: the writes kept (sidecar.AssignmentWrite,
//	                       JSON) by their time (ms), written with them, for
//	                       AssignmentsChanged; each kept sidecar.AppendOnceWindow
//	reseller:assigned      sorted set: F by its last write kept (ms), written
//	                       before it, for AssignmentsChanged; kept
//	                       sidecar.AppendOnceWindow
//
// An id already in folded form (lower-case ASCII, the common case) has
// the key it had before ids were folded.
//
// Streams:
//
//	<prefix>:events            the events the host's mailer follows
//	<prefix>:audit             the audit trail: privileged actions (staff, resellers)
//	{<prefix>:audit}:self      the audit trail: self-service records (own side)
//
// The self-service stream's hash tag is the audit stream's whole name, so
// both lie in one Cluster slot and one script appends to either with an id
// above both streams' last: the trail reads as one, in id order.

// assignBatch bounds one bulk-load round trip.
const assignBatch = 500

func (s *Store) assignKey(c string) string { return s.cust(sidecar.FoldID(c), "assign") }
func (s *Store) domainKey(d string) string { return s.tagged("dom", d, "customers") }
func (s *Store) streamKey(n string) string { return s.prefix + ":" + n }
func (s *Store) auditSelfKey() string      { return "{" + s.streamKey("audit") + "}:self" }

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
		inv := make([]string, len(batch))
		for i := range batch {
			inv[i] = sidecar.AssignmentKey(batch[i].Customer)
		}
		if err != nil {
			// Some of the batch may be written, with only the replies
			// lost: a customer moved out of a domain is a narrowing.
			return stored, s.evictDespite(ctx, unavailable(err), inv...)
		}
		s.publish(ctx, inv...)
		stored += len(batch)
	}
	return stored, nil
}

// changeAssignmentScript replaces or removes an assignment only while the
// customer is still in the domain the caller read; a removal keeps the
// record, marked removed, for RemovedAssignment. It keeps the write for
// AssignmentsChanged (sidecar.AssignmentChange.Kept): a removal with a
// removed_by, a write with a kept form that changes the record; and
// forgets the write the change undoes.
// KEYS: the assignment, the removed assignment, the kept writes. ARGV:
// that domain (empty when unassigned), the new assignment JSON (empty
// removes it), and for a removal removed_at, removed_by and how long to
// keep it (ms); then the write as kept (JSON, empty: none; a removal's is
// made here), its time (ms), the undone write (JSON, empty: none), the
// window's edge (ms) and the window (ms). Returns 0 when the customer is
// elsewhere now; when applied, {1, the spelling the replaced record had
// (empty when unassigned)}.
var changeAssignmentScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
local current, spelled = '', ''
local old
if v then
  old = cjson.decode(v)
  current, spelled = old['domain'] or '', old['customer'] or ''
end
if current ~= ARGV[1] then return 0 end
local kept = ''
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  if old then
    old['removed_at'] = ARGV[3]
    old['removed_by'] = ARGV[4]
    redis.call('SET', KEYS[2], cjson.encode(old), 'PX', ARGV[5])
    if ARGV[4] ~= '' then
      old['change'] = 'delete'
      kept = cjson.encode(old)
    end
  end
else
  redis.call('SET', KEYS[1], ARGV[2])
  if v ~= ARGV[2] then kept = ARGV[6] end
end
if ARGV[8] ~= '' then redis.call('ZREM', KEYS[3], ARGV[8]) end
if kept ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[7], kept)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[9])
  redis.call('PEXPIRE', KEYS[3], ARGV[10])
end
return {1, spelled}
`)

func (s *Store) keptAssignKey(c string) string { return s.cust(sidecar.FoldID(c), "assign:kept") }
func (s *Store) assignedKey() string           { return s.prefix + ":reseller:assigned" }

// keptWrite is the write c keeps as the script receives it: a put's as
// JSON, a removal's made by the script (empty here); and its time.
func keptWrite(c *sidecar.AssignmentChange) (string, time.Time) {
	if c.To == nil {
		return "", c.At
	}
	if w := c.Kept(nil); w != nil {
		return encode(w), w.At()
	}
	return "", c.To.UpdatedAt
}

// undoneWrite is the write c undoes as kept (JSON), or empty.
func undoneWrite(c *sidecar.AssignmentChange) string {
	if c.Undoes == nil {
		return ""
	}
	if w := c.Undoes.Kept(nil); w != nil {
		return encode(w)
	}
	return ""
}

// markAssigned marks in reseller:assigned the customers of the changes in
// cs that keep a write, before the writes: a fault in between marks a
// write not made, whose customer's kept writes hold nothing new. A batch
// of removals only narrows access, so it waits for its marks at most
// markWait and goes ahead, as a revocation does (keepChangeAhead); a
// batch that writes fails when they cannot be kept.
func (s *Store) markAssigned(ctx context.Context, cs []sidecar.AssignmentChange) error {
	var zs []goredis.Z
	narrowing := true
	for i := range cs {
		c := &cs[i]
		if c.To != nil {
			narrowing = false
		}
		if c.To == nil && c.By == "" || c.To != nil && c.Change == "" {
			continue
		}
		_, at := keptWrite(c)
		zs = append(zs, goredis.Z{Score: ms(at), Member: sidecar.FoldID(c.Customer)})
	}
	if len(zs) == 0 {
		return nil
	}
	if narrowing {
		s.keepChangesAhead(ctx, s.assignedKey(), zs, "assignment removals not kept for the records sweep", "customers", len(zs))
		return nil
	}
	return s.keepChanges(ctx, s.assignedKey(), zs)
}

// AssignmentsChanged reads the customers kept in reseller:assigned since
// since, then each one's kept writes since since: a customer is kept at
// its last write, so none with a write since since is left out.
func (s *Store) AssignmentsChanged(ctx context.Context, since time.Time) ([]sidecar.AssignmentWrite, error) {
	edge := s.now().Add(-sidecar.AppendOnceWindow)
	from := strconv.FormatInt(int64(ms(since)), 10)
	var out []sidecar.AssignmentWrite
	err := s.readKept(ctx, s.assignedKey(), since, func(customers []string) error {
		for _, c := range customers {
			raws, err := s.c.ZRangeByScore(ctx, s.keptAssignKey(c), &goredis.ZRangeBy{Min: from, Max: "+inf"}).Result()
			if err != nil {
				return unavailable(err)
			}
			for _, raw := range raws {
				w, err := decode[sidecar.AssignmentWrite](raw)
				if err != nil {
					return err
				}
				if at := w.At(); !at.Before(since) && at.After(edge) {
					out = append(out, *w)
				}
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b sidecar.AssignmentWrite) int { return a.At().Compare(b.At()) })
	return out, err
}

// ChangeAssignments checks and writes each assignment in one script on its
// key, so no other write lands in between. The domain indexes live in
// other slots and only point at records: a listing reads the record and
// skips (and drops) a customer it no longer names. So the new domain's
// entry is added before the record changes and the old one's dropped
// after: a fault between them leaves a pointer the listing skips, never
// an assignment other than one policy judged. The new entry is added
// again after the write: a listing that read the record before it and
// dropped the entry meanwhile does not keep the customer out of its
// domain's listing (dropStale).
func (s *Store) ChangeAssignments(ctx context.Context, cs []sidecar.AssignmentChange) ([]int, error) {
	for i := range cs {
		if err := cs[i].Validate(); err != nil {
			return nil, err
		}
	}
	if err := s.reserveInDomains(ctx, cs); err != nil {
		return nil, err
	}
	if err := s.markAssigned(ctx, cs); err != nil {
		return nil, err
	}
	var (
		conflicts []int
		perr      error // a lost eviction: the changes stand, a retry publishes again
	)
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
				to, keep := "", s.removedKeep(c.At)
				if c.To != nil {
					to = encode(c.To)
				}
				kept, at := keptWrite(&c)
				results[i] = changeAssignmentScript.Eval(ctx, p, []string{s.assignKey(c.Customer), s.removedAssignKey(c.Customer), s.keptAssignKey(c.Customer)},
					c.From, to, c.At.UTC().Format(time.RFC3339Nano), c.By, keep,
					kept, int64(ms(at)), undoneWrite(&c), int64(ms(s.now().Add(-sidecar.AppendOnceWindow))), sidecar.AppendOnceWindow.Milliseconds())
			}
			return nil
		})
		if err != nil {
			// Any of the batch's changes may be applied with only its
			// reply lost: each is evicted, as if applied.
			keys := make([]string, len(batch))
			for i, c := range batch {
				keys[i] = sidecar.AssignmentKey(c.Customer)
			}
			return conflicts, s.evictDespite(ctx, unavailable(err), keys...)
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
				if c.To != nil {
					p.ZAdd(ctx, s.domainKey(c.To.Domain), goredis.Z{Member: c.To.Customer})
				}
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
		if len(applied) > 0 {
			if err := s.publishNarrowed(ctx, applied...); err != nil {
				perr = err
			}
		}
	}
	return conflicts, perr
}

// reserveScript adds members to a domain's index only while the index,
// with those of them not in it yet, holds at most limit: the count and
// the additions are one step on the index's key, so calls racing for a
// domain's last places cannot together pass its bound. Ids fold
// (sidecar.FoldID): a member whose record the domain holds in another
// spelling comes with that spelling, and is not new while the index holds
// either.
// KEYS: the domain index. ARGV: limit, then pairs of member and its held
// spelling ("" when none).
// Returns {1 when added (0 when refused), members held before, the
// members it added (when refused: how many it would have)}.
var reserveScript = goredis.NewScript(`
local limit = tonumber(ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
local new = {}
for i = 2, #ARGV, 2 do
  local m, was = ARGV[i], ARGV[i + 1]
  if not redis.call('ZSCORE', KEYS[1], m) and (was == '' or not redis.call('ZSCORE', KEYS[1], was)) then
    new[#new + 1] = m
  end
end
if held + #new > limit then return {0, held, #new} end
local args = {}
for _, m in ipairs(new) do
  args[#args + 1] = 0
  args[#args + 1] = m
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
return {1, held, new}
`)

// reserveInDomains enters the customers of cs's bounded changes
// (MaxInDomain) in their domains' indexes, all of a domain in one step
// that refuses them when they would take it past the smallest bound of
// its changes, before any record is written. The index is the count:
// every assigned customer is in it (ChangeAssignments adds a customer
// before its record), and what else it holds (a change that did not
// apply, a move whose old entry was not dropped) is a pointer a listing
// drops, so the count errs only high. When a later domain refuses, the
// entries reserved in earlier ones are taken back and nothing is written.
// Ids fold, as in the memory store: a change from the domain into the
// same domain, of a customer whose record (read first) the domain holds
// in another spelling, is not a new one while the index holds that
// spelling. Should the record leave the domain after the read, the
// change, made from the domain, conflicts and writes nothing.
func (s *Store) reserveInDomains(ctx context.Context, cs []sidecar.AssignmentChange) error {
	var (
		order   []string
		bound   = map[string]int{}
		members = map[string][]any{}
		seen    = map[string]bool{}
		ids     []string
	)
	for _, c := range cs {
		if c.To != nil && c.MaxInDomain > 0 {
			ids = append(ids, c.Customer)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	current, err := s.GetAssignments(ctx, ids)
	if err != nil {
		return err
	}
	i := 0
	for _, c := range cs {
		if c.To == nil || c.MaxInDomain <= 0 {
			continue
		}
		was := ""
		if a := current[i]; a != nil && c.From == c.To.Domain && a.Domain == c.From && a.Customer != c.Customer {
			was = a.Customer
		}
		i++
		d := c.To.Domain
		b, ok := bound[d]
		if !ok {
			order = append(order, d)
		}
		if !ok || c.MaxInDomain < b {
			bound[d] = c.MaxInDomain
		}
		if k := d + "\x00" + sidecar.FoldID(c.Customer); !seen[k] {
			seen[k] = true
			members[d] = append(members[d], c.Customer, was)
		}
	}
	type reserved struct {
		domain string
		added  []any
	}
	var done []reserved
	takeBack := func() {
		for _, r := range done {
			if len(r.added) > 0 {
				if err := s.c.ZRem(ctx, s.domainKey(r.domain), r.added...).Err(); err != nil {
					s.log.Warn("take back domain index entries of a refused change", "domain", r.domain, "err", err)
				}
			}
		}
	}
	for _, d := range order {
		reply, err := reserveScript.Run(ctx, s.c, []string{s.domainKey(d)}, append([]any{bound[d]}, members[d]...)...).Slice()
		if err != nil || len(reply) != 3 {
			takeBack()
			return unavailable(err)
		}
		ok, _ := reply[0].(int64)
		held, _ := reply[1].(int64)
		if ok != 1 {
			adding, _ := reply[2].(int64)
			takeBack()
			return sidecar.TooManyAssignments(d, int(held), int(adding), bound[d])
		}
		added, _ := reply[2].([]any)
		done = append(done, reserved{d, added})
	}
	return nil
}

func (s *Store) removedAssignKey(c string) string {
	return s.cust(sidecar.FoldID(c), "assign:removed")
}

// removedKeep is how long, in ms, a removal made at at is kept: until
// sidecar.AppendOnceWindow past it on the store's clock, at least 1.
func (s *Store) removedKeep(at time.Time) int64 {
	return max(at.Add(sidecar.AppendOnceWindow).Sub(s.now()).Milliseconds(), 1)
}

func (s *Store) RemovedAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	raw, err := s.c.Get(ctx, s.removedAssignKey(customer)).Result()
	if err != nil {
		return nil, rerr(err, "removed assignment")
	}
	a, err := decode[sidecar.Assignment](raw)
	if err != nil {
		return nil, err
	}
	if s.now().Sub(a.RemovedAt) >= sidecar.AppendOnceWindow {
		return nil, notFound("removed assignment")
	}
	return a, nil
}

func (s *Store) DeleteAssignment(ctx context.Context, customer string) error {
	raw, err := s.c.GetDel(ctx, s.assignKey(customer)).Result()
	if err != nil {
		// The record may be gone with only the reply lost.
		return s.evictDespite(ctx, rerr(err, "assignment"), sidecar.AssignmentKey(customer))
	}
	if old, err := decode[sidecar.Assignment](raw); err == nil {
		s.c.ZRem(ctx, s.domainKey(old.Domain), old.Customer)
	}
	return s.publishNarrowed(ctx, sidecar.AssignmentKey(customer))
}

func (s *Store) AssignmentsByDomain(ctx context.Context, domain string, p sidecar.Page) ([]sidecar.Assignment, string, error) {
	n := p.N()
	scope := sidecar.AssignmentsScope(domain)
	lo := "-"
	if p.Cursor != "" {
		after, err := s.openCursor(ctx, scope, p.Cursor)
		if err != nil {
			return nil, "", err
		}
		lo = "(" + after
	}
	var (
		out   []sidecar.Assignment
		stale []string // members whose records no longer put them here
	)
	index := s.domainKey(domain)
	defer func() { s.dropStale(ctx, domain, stale) }()
	read := func(count int64) ([]string, error) {
		members, err := s.c.ZRangeByLex(ctx, index, &goredis.ZRangeBy{Min: lo, Max: "+", Count: count}).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		return members, nil
	}
	for scanned := 0; scanned < scanLimit; {
		members, err := read(int64(n + 1))
		if err != nil {
			return nil, "", err
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
			if len(out) == n { // members[i] exists: another page follows
				next, err := s.sealCursor(ctx, scope, out[n-1].Customer)
				return out, next, err
			}
			var a *sidecar.Assignment
			if raw != "" {
				if a, err = decode[sidecar.Assignment](raw); err != nil {
					return nil, "", err
				}
			}
			if a == nil || a.Domain != domain || a.Customer != members[i] {
				stale = append(stale, members[i]) // moved, respelled or deleted meanwhile
				continue
			}
			out = append(out, *a)
		}
		if len(members) < n+1 {
			return out, "", nil
		}
		lo = "(" + members[len(members)-1]
	}
	// Stopped at scanLimit, however few it found: resume after the last
	// member examined, unless none is left. An empty cursor would tell
	// the caller it has the whole domain. That member may be a stale
	// pointer, another domain's customer: the sealed cursor hides it.
	if more, err := read(1); err != nil {
		return nil, "", err
	} else if len(more) == 0 {
		return out, "", nil
	}
	next, err := s.sealCursor(ctx, scope, lo[1:])
	return out, next, err
}

// dropStale removes from domain's index the customers a listing found
// no record putting there. A change may have added one before writing its
// record (ChangeAssignments) and the listing read the record before the
// write: so the records are read again after the removal, and a customer
// now assigned there, as spelled, is put back; when they cannot be read,
// every one is (a pointer the listing skips is harmless, a missing one
// hides an assignment). The change adds its entry again after its write
// too, so whichever runs last, the entry stays.
func (s *Store) dropStale(ctx context.Context, domain string, stale []string) {
	if len(stale) == 0 {
		return
	}
	index := s.domainKey(domain)
	members := make([]any, len(stale))
	keys := make([]string, len(stale))
	for i, m := range stale {
		members[i], keys[i] = m, s.assignKey(m)
	}
	if err := s.c.ZRem(ctx, index, members...).Err(); err != nil {
		return
	}
	var back []goredis.Z
	raws, err := s.getMany(ctx, keys)
	for i, m := range stale {
		if err != nil {
			back = append(back, goredis.Z{Member: m})
			continue
		}
		if raws[i] == "" {
			continue
		}
		if a, derr := decode[sidecar.Assignment](raws[i]); derr == nil && a.Domain == domain && a.Customer == m {
			back = append(back, goredis.Z{Member: m})
		}
	}
	if len(back) > 0 {
		if err := s.c.ZAdd(ctx, index, back...).Err(); err != nil {
			s.log.Warn("put back assignments dropped from a domain index", "domain", domain, "err", err)
		}
	}
}

// ---- streams ---------------------------------------------------------------

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

// appendAuditScript appends to one stream of the audit trail with an id
// above the last of both, so ids never repeat across them and a merged
// read orders and pages by id alone. Each stream is trimmed to its own
// approximate length: a flood of one never trims the other.
// KEYS: the stream to append to, the trail's other stream, and the key
// remembering the entry's Once (see onceKey). ARGV: the approximate
// MAXLEN of the first (0: none), the Once key's TTL in seconds, then
// field, value, ...
var appendAuditScript = goredis.NewScript(`
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return seen end
end
local function top(k)
  if redis.call('EXISTS', k) == 0 then return 0, -1 end
  local info = redis.call('XINFO', 'STREAM', k)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
      return tonumber(ms), tonumber(seq)
    end
  end
  return 0, -1
end
local ms, seq = top(KEYS[1])
local oms, oseq = top(KEYS[2])
if oms > ms or (oms == ms and oseq > seq) then ms, seq = oms, oseq end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id
if now > ms then
  id = string.format('%.0f-0', now)
else
  id = string.format('%.0f-%.0f', ms, seq + 1)
end
local args = {'XADD', KEYS[1]}
if ARGV[1] ~= '0' then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[1]
end
args[#args + 1] = id
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
id = redis.call(unpack(args))
if KEYS[3] then redis.call('SET', KEYS[3], id, 'EX', ARGV[2]) end
return id
`)

// appendEventScript appends to the events stream and trims it to about
// its length, never past what a consumer group (the host's mailer) has
// not acknowledged: Redis 7.0's XADD trims by count alone, so a mailer
// that lags would lose notifications, and any customer can write events.
// A group keeps its oldest pending entry (read, not yet XACKed: a mailer
// that crashed re-claims it with XAUTOCLAIM), else what follows its
// last-delivered-id; the lowest over groups bounds the trim. Beyond the
// hard cap entries go whatever was read or acknowledged: what every group
// had acknowledged goes first, uncounted, then the oldest of the rest,
// and the script returns how many of those. Without groups it trims as
// XADD MAXLEN ~ did.
// KEYS: the events stream, and the key remembering the event's Once (see
// onceKey). ARGV: MAXLEN (0: none), hard cap, the Once key's TTL in
// seconds, then field, value, ... Returns {id, entries dropped at the hard
// cap}.
var appendEventScript = goredis.NewScript(`
if KEYS[2] then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 0} end
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local key, maxlen, hard = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local args = {'XADD', key, '*'}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
if KEYS[2] then redis.call('SET', KEYS[2], id, 'EX', ARGV[3]) end
local len = redis.call('XLEN', key)
if maxlen == 0 or len <= maxlen then return {id, 0} end
-- keep: the oldest id some group still needs.
local keep
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local need
  local pending = redis.call('XPENDING', key, name)
  if pending[1] > 0 then
    need = pending[2]
  else
    local lm, ls = parse(last)
    need = string.format('%.0f-%.0f', lm, ls + 1)
  end
  if keep == nil or less(need, keep) then keep = need end
end
if keep == nil then
  redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
  return {id, 0}
end
local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1]
if less(first, keep) then
  -- Entries before keep are acknowledged by every group. Drop the oldest
  -- down to maxlen, but none from keep on; at most 1000 at a time, so a
  -- backlog a group just acknowledged is dropped over the next appends.
  local kept = redis.call('XRANGE', key, '-', '+', 'COUNT', math.min(len - maxlen, 1000) + 1)
  local min = kept[#kept][1]
  if less(keep, min) then min = keep end
  redis.call('XTRIM', key, 'MINID', min)
end
local dropped = 0
if hard > 0 and redis.call('XLEN', key) > hard then
  redis.call('XTRIM', key, 'MINID', keep)
  if redis.call('XLEN', key) > hard then
    dropped = redis.call('XTRIM', key, 'MAXLEN', hard)
  end
end
return {id, dropped}
`)

func (s *Store) AppendEvent(ctx context.Context, e *sidecar.Event) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	fields := streamFields(e.Type, e.Time, e.Customer, e.Actor, nil, e.Data)
	args := make([]any, 0, 3+2*len(fields))
	args = append(args, s.cfg.EventsMaxLen, s.cfg.EventsHardMaxLen, onceTTL)
	for k, v := range fields {
		args = append(args, k, v)
	}
	keys := []string{s.streamKey("events")}
	if e.Once != "" {
		keys = append(keys, onceKey(keys[0], e.Once))
	}
	res, err := appendEventScript.Run(ctx, s.c, keys, args...).Slice()
	if err != nil {
		return unavailable(err)
	}
	id, _ := res[0].(string)
	if dropped, _ := res[1].(int64); dropped > 0 && s.eventsDropped.Add(uint64(dropped)) == uint64(dropped) {
		// Once: a lagging mailer would make every append say it again;
		// deputy_events_dropped_total counts them all.
		s.log.Warn("events dropped at the events stream's hard cap before every consumer group acknowledged them; counted in deputy_events_dropped_total",
			"hard_maxlen", s.cfg.EventsHardMaxLen)
	}
	e.ID = id
	return nil
}

// EventsDropped counts the events the stream dropped at its hard cap
// (redis.events_hard_maxlen): entries a consumer group had not
// acknowledged, read or not.
func (s *Store) EventsDropped() uint64 { return s.eventsDropped.Load() }

func (s *Store) AppendAudit(ctx context.Context, a *sidecar.AuditEntry) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if a.Time.IsZero() {
		a.Time = s.now()
	}
	keys, maxLen := []string{s.streamKey("audit"), s.auditSelfKey()}, s.cfg.AuditMaxLen
	if a.SelfService {
		keys, maxLen = []string{keys[1], keys[0]}, s.cfg.AuditSelfMaxLen
	}
	fields := streamFields(a.Action, a.Time, a.Customer, a.Actor, map[string]string{"target": a.Target, "outcome": a.Outcome}, a.Data)
	args := make([]any, 0, 2+2*len(fields))
	args = append(args, maxLen, onceTTL)
	for k, v := range fields {
		args = append(args, k, v)
	}
	if a.Once != "" {
		// One key for the trail's two streams: an entry is in one of them.
		keys = append(keys, onceKey(s.streamKey("audit"), a.Once))
	}
	id, err := appendAuditScript.Run(ctx, s.c, keys, args...).Text()
	if err != nil {
		return unavailable(err)
	}
	a.ID = id
	return nil
}

// onceTTL is sidecar.AppendOnceWindow in the seconds EX takes.
const onceTTL = int64(sidecar.AppendOnceWindow / time.Second)

// onceKey is the key remembering the entry appended to stream with once,
// in the stream's Cluster slot: after the stream's own hash tag, or with
// the stream's name as the tag (as auditSelfKey places the trail's other
// stream).
func onceKey(stream, once string) string {
	if open := strings.IndexByte(stream, '{'); open >= 0 && strings.IndexByte(stream[open+1:], '}') > 0 {
		return stream + ":once:" + once
	}
	return "{" + stream + "}:once:" + once
}

type entry struct {
	id, typ, customer, actor, target, outcome string
	time                                      time.Time
	selfService                               bool
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

// streamPage reads one stream forward from a position, a batch at a time.
type streamPage struct {
	key, start string // start: XRANGE's lower bound
	batch      int64
	buf        []goredis.XMessage
	done       bool // the last batch was short: nothing follows
}

// next returns the next entry without taking it; nil at the end.
func (p *streamPage) next(ctx context.Context, c goredis.UniversalClient) (*goredis.XMessage, error) {
	if len(p.buf) == 0 && !p.done {
		msgs, err := c.XRangeN(ctx, p.key, p.start, "+", p.batch).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		p.done = int64(len(msgs)) < p.batch
		if len(msgs) > 0 {
			p.start = "(" + msgs[len(msgs)-1].ID
		}
		p.buf = msgs
	}
	if len(p.buf) == 0 {
		return nil, nil
	}
	return &p.buf[0], nil
}

// readStream returns matching entries after the cursor from the streams
// (ids unique across them) merged oldest first, examining at most
// scanLimit entries; "" cursor at the end of them all.
func (s *Store) readStream(ctx context.Context, f sidecar.StreamFilter, keys ...string) ([]entry, string, error) {
	start := "-"
	if f.Cursor != "" {
		if _, err := sidecar.ParseStreamID(f.Cursor); err != nil {
			return nil, "", err
		}
		start = "(" + f.Cursor
	}
	n := f.N()
	pages := make([]*streamPage, len(keys))
	for i, k := range keys {
		pages[i] = &streamPage{key: k, start: start, batch: int64(max(2*n, 100))}
	}
	// oldest is the page whose next entry comes first; nil at the end.
	oldest := func() (*streamPage, *goredis.XMessage, error) {
		var best *streamPage
		var bm *goredis.XMessage
		var bid sidecar.StreamID
		for _, p := range pages {
			m, err := p.next(ctx, s.c)
			if err != nil {
				return nil, nil, err
			}
			if m == nil {
				continue
			}
			id, _ := sidecar.ParseStreamID(m.ID) // Redis made it
			if best == nil || id.Less(bid) {
				best, bm, bid = p, m, id
			}
		}
		return best, bm, nil
	}
	var out []entry
	last := ""
	for scanned := 0; len(out) < n && scanned < scanLimit; scanned++ {
		p, m, err := oldest()
		if err != nil {
			return nil, "", err
		}
		if p == nil {
			return out, "", nil
		}
		p.buf = p.buf[1:]
		last = m.ID
		e := parseEntry(*m)
		e.selfService = p.key == s.auditSelfKey()
		if (f.Type == "" || f.Type == e.typ) && (f.Customer == "" || f.Customer == e.customer) &&
			(f.Actor == "" || f.Actor == e.actor) && (f.From.IsZero() || !e.time.Before(f.From)) &&
			(f.To.IsZero() || e.time.Before(f.To)) {
			out = append(out, e)
		}
	}
	if p, _, err := oldest(); err != nil {
		return nil, "", err
	} else if p == nil {
		last = ""
	}
	return out, last, nil
}

func (s *Store) ReadEvents(ctx context.Context, f sidecar.StreamFilter) ([]sidecar.Event, string, error) {
	es, next, err := s.readStream(ctx, f, s.streamKey("events"))
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
	es, next, err := s.readStream(ctx, f, s.streamKey("audit"), s.auditSelfKey())
	if err != nil {
		return nil, "", err
	}
	out := make([]sidecar.AuditEntry, len(es))
	for i, e := range es {
		out[i] = sidecar.AuditEntry{ID: e.id, Action: e.typ, Time: e.time, Customer: e.customer, Actor: e.actor,
			Target: e.target, Outcome: e.outcome, SelfService: e.selfService, Data: e.data}
	}
	return out, next, nil
}
