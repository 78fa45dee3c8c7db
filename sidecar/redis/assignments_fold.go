package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Assignments written before customer ids were folded (sidecar.FoldID)
// lie under the spelling they were assigned as: {cust:ACME}:assign. The
// store reads only the folded key ({cust:acme}:assign), so until such a
// record is moved its customer counts as unassigned: access it gave is
// withdrawn, never widened, but another domain could then claim a
// variant of it. FoldAssignments moves them. Earlier versions also took
// customer ids outside the assignable set (sidecar.ValidAssignedID), some
// filed under a Unicode fold ({cust:acme}:assign holding "acmé"): those
// it removes, as no store assigns such an id any more.

// FoldReport counts what FoldAssignments did.
type FoldReport struct {
	Moved     int // filed under the folded id, spelling kept
	Merged    int // a variant of a customer its own domain held under the folded id: dropped
	Conflicts int // variants of one id held by different domains: all removed
	Refused   int // ids outside the assignable set: removed
}

// foldedMarker is set once a pass found every assignment folded and of
// an assignable id. (A pass of the version that folded Unicode set
// <prefix>:assignments-folded, which does not say the ids are ASCII.)
func (s *Store) foldedMarker() string { return s.prefix + ":assignments-ascii" }

// delIfSameScript deletes KEYS[1] only while it still holds ARGV[1]: a
// write that landed since the read is kept.
var delIfSameScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// FoldAssignments files every assignment the previous version stored
// under an unfolded spelling under its folded id, keeping the spelling in
// the record. Where the folded id is already held, by the same domain the
// variant is dropped; by another domain, both are removed, logged and
// audited, and the id is marked (<prefix>:{cust:<folded>}:assign-conflict)
// so that no later pass moves another variant in: which domain rightly
// holds the customer cannot be told (this is the state the variant bypass
// leaves), and removing all is the only answer that gives no domain a
// customer it may not hold; a super admin assigns it again. A fault
// part-way leaves every spelling acting at most where the previous
// version let it, and the next pass ends where an unbroken one would.
//
// An assignment whose customer id is outside the assignable set, under
// whatever key, is removed, logged and audited
// (reseller.assignment.id_refused): it is not moved into service, and
// memory, which never held one, agrees.
//
// The pass scans the whole keyspace once; when it finishes it sets a
// marker, and later calls return at once. Records a replica of the
// previous version writes after that count as unassigned until assigned
// again (or the marker, <prefix>:assignments-ascii, is deleted).
func (s *Store) FoldAssignments(ctx context.Context) (FoldReport, error) {
	var (
		mu  sync.Mutex
		rep FoldReport
	)
	done, err := s.c.Exists(ctx, s.foldedMarker()).Result()
	if err != nil {
		return rep, unavailable(err)
	}
	if done == 1 {
		return rep, nil
	}
	pattern := globEscape(s.prefix) + ":{cust:*}:assign"
	err = s.eachMaster(ctx, func(ctx context.Context, node goredis.Cmdable) error {
		it := node.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			var one FoldReport
			if err := s.foldOne(ctx, it.Val(), &one); err != nil {
				return err
			}
			mu.Lock()
			rep.Moved, rep.Merged, rep.Conflicts, rep.Refused = rep.Moved+one.Moved, rep.Merged+one.Merged, rep.Conflicts+one.Conflicts, rep.Refused+one.Refused
			mu.Unlock()
		}
		return it.Err()
	})
	if err != nil {
		return rep, unavailable(err)
	}
	if err := s.c.Set(ctx, s.foldedMarker(), "1", 0).Err(); err != nil {
		return rep, unavailable(err)
	}
	return rep, nil
}

// eachMaster runs fn on every master of a Cluster, or once on the client.
func (s *Store) eachMaster(ctx context.Context, fn func(context.Context, goredis.Cmdable) error) error {
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, s.c)
}

// foldScript files a legacy record under its folded id, in the folded
// id's slot. KEYS: the folded assignment, its conflict mark. ARGV: the
// record, its domain. Returns "moved" (it was free), "merged" (held by the
// same domain), "marked" (an earlier pass found variants of the id in two
// domains) or {"conflict", the record held}: held by another domain, now
// removed and the id marked, so that no later pass moves a variant in.
var foldScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 'marked' end
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return 'moved'
end
if cjson.decode(cur)['domain'] == ARGV[2] then return 'merged' end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1')
return {'conflict', cur}
`)

// foldOne moves the assignment under key, when its spelling is not
// folded, and removes it when its customer id may not be assigned. The
// legacy record is deleted last, and only while it holds what was read:
// a fault before leaves it for the next pass, which finds the folded id
// moved, merged or marked and ends the same.
func (s *Store) foldOne(ctx context.Context, key string, rep *FoldReport) error {
	spelled, ok := strings.CutPrefix(key, s.prefix+":{cust:")
	if spelled, ok = strings.CutSuffix(spelled, "}:assign"); !ok {
		return nil
	}
	raw, err := s.c.Get(ctx, key).Result()
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	old, err := decode[sidecar.Assignment](raw)
	if err != nil {
		s.log.Warn("unreadable assignment left where it is; it counts as unassigned", "key", key, "err", err)
		return nil
	}
	if sidecar.ValidAssignedID("customer", old.Customer) != nil {
		rep.Refused++
		return s.refuseOne(ctx, key, spelled, raw, old)
	}
	folded := sidecar.FoldID(old.Customer)
	if s.cust(folded, "assign") == key {
		return nil
	}
	res, err := foldScript.Run(ctx, s.c, []string{s.cust(folded, "assign"), s.cust(folded, "assign-conflict")}, raw, old.Domain).Result()
	if err != nil {
		return err
	}
	switch res {
	case "moved":
		// The listing finds the record through the index entry the
		// previous version wrote: it names the spelling kept.
		rep.Moved++
		s.publish(ctx, sidecar.AssignmentKey(old.Customer))
	case "merged":
		// The listing drops the variant's index entry: the record it reads
		// names another spelling.
		rep.Merged++
	case "marked":
		rep.Conflicts++
		s.c.ZRem(ctx, s.domainKey(old.Domain), old.Customer)
	default:
		reply, _ := res.([]any)
		var held *sidecar.Assignment
		if len(reply) == 2 {
			cur, _ := reply[1].(string)
			held, _ = decode[sidecar.Assignment](cur)
		}
		if held == nil {
			return fmt.Errorf("fold %s: unexpected reply %v", key, res)
		}
		rep.Conflicts++
		s.publish(ctx, sidecar.AssignmentKey(old.Customer))
		s.c.ZRem(ctx, s.domainKey(old.Domain), old.Customer)
		s.c.ZRem(ctx, s.domainKey(held.Domain), held.Customer)
		s.log.Error("variants of one customer id held by two domains: both assignments removed; assign the customer again",
			"customer", held.Customer, "domain", held.Domain, "variant", old.Customer, "variant_domain", old.Domain)
		if err := s.AppendAudit(ctx, &sidecar.AuditEntry{Actor: "deputy", Action: "reseller.assignment.fold_conflict",
			Customer: held.Customer, Target: held.Customer, Outcome: "removed",
			Data: map[string]string{"domain": held.Domain, "variant": old.Customer, "variant_domain": old.Domain}}); err != nil {
			s.log.Error("audit entry not appended", "action", "reseller.assignment.fold_conflict", "customer", held.Customer, "error", err)
		}
	}
	return delIfSameScript.Run(ctx, s.c, []string{key}, raw).Err()
}

// refuseOne removes the assignment under key, whose customer id may not
// be assigned: out of its domain's listing first, then logged and
// audited, and the record deleted last (while it holds what was read), so
// a fault before leaves it for the next pass, which ends the same.
func (s *Store) refuseOne(ctx context.Context, key, spelled, raw string, old *sidecar.Assignment) error {
	if err := s.c.ZRem(ctx, s.domainKey(old.Domain), old.Customer).Err(); err != nil {
		return err
	}
	s.log.Error("assignment of a customer id outside "+sidecar.AssignedIDChars+" removed; an upstream's collation may read it as another customer's id",
		"customer", old.Customer, "domain", old.Domain)
	if err := s.AppendAudit(ctx, &sidecar.AuditEntry{Actor: "deputy", Action: "reseller.assignment.id_refused",
		Customer: old.Customer, Target: old.Customer, Outcome: "removed",
		Data: map[string]string{"domain": old.Domain}}); err != nil {
		s.log.Error("audit entry not appended", "action", "reseller.assignment.id_refused", "customer", old.Customer, "error", err)
	}
	if err := delIfSameScript.Run(ctx, s.c, []string{key}, raw).Err(); err != nil {
		return err
	}
	s.publish(ctx, sidecar.AssignmentKey(spelled))
	return nil
}

// globEscape quotes the characters SCAN MATCH reads as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
