package redis

import (
	"context"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// {cust:C}:consentbudget   the changes C made to their own consent in the
// current window (hash: n, until in Unix ms), gone when the window ends.
// {org:O}:selfbudget        the same for what organisation O did for
// itself (access requests, shares).
// {dom:D}:rowbudget         the same for the assignment rows reseller
// domain D wrote (a PUT one, an import each of its rows).

func (s *Store) consentBudgetKey(c string) string { return s.cust(c, "consentbudget") }

// takeConsentChangeScript takes one change from a budget's window (a
// customer's consent changes, an organisation's self-service ones), or
// answers how long it has left. The window runs window long from the
// caller's clock (the store's now), so tests that set the clock decide
// it, and is over once it is over by both that clock and Redis's (cut, as
// for everything a script drops as over): a replica whose clock runs
// ahead ends no window early. The key expires relative to the same
// instant (PEXPIRE), never at an instant Redis would judge on its own
// clock: a window begun on a replica whose clock lags by more than its
// length would otherwise be over in Redis before its first change was
// counted.
// KEYS: the budget. ARGV: now (Unix ms), limit, window (ms), how many
// changes to take (all or none: a domain's assignment rows).
// Returns -1 when taken, else the ms until the window ends.
var takeConsentChangeScript = goredis.NewScript(cutLua + `
local now, limit, window, k = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local at = cut(now)
local n, ends = 0, tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if at >= ends then
  ends = now + window
else
  n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
end
if n + k > limit then return ends - at end
redis.call('HSET', KEYS[1], 'n', n + k, 'until', string.format('%.0f', ends))
redis.call('PEXPIRE', KEYS[1], math.max(ends - at, 1))
return -1
`)

func (s *Store) TakeConsentChange(ctx context.Context, customer string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudget(ctx, s.consentBudgetKey(customer), limit, window)
}

func (s *Store) TakeSelfServiceChange(ctx context.Context, org string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudget(ctx, s.tagged("org", org, "selfbudget"), limit, window)
}

func (s *Store) takeBudget(ctx context.Context, key string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudgetN(ctx, key, 1, limit, window)
}

// takeBudgetN takes n changes from key's window, all or none.
func (s *Store) takeBudgetN(ctx context.Context, key string, n, limit int, window time.Duration) (time.Duration, bool, error) {
	wait, err := takeConsentChangeScript.Run(ctx, s.c, []string{key},
		strconv.FormatInt(s.now().UnixMilli(), 10), limit, window.Milliseconds(), n).Int64()
	if err != nil {
		return 0, false, unavailable(err)
	}
	if wait < 0 {
		return 0, true, nil
	}
	return time.Duration(wait) * time.Millisecond, false, nil
}

func (s *Store) TakeAssignmentRows(ctx context.Context, domain string, rows, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudgetN(ctx, s.tagged("dom", domain, "rowbudget"), rows, limit, window)
}
