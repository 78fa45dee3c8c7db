package delegation

import "context"

// A caller's management writes are held to a budget (the API's, per
// caller: api.write_burst, then api.write_rate) because each appends to
// the audit and events streams, which drop their oldest entries as they
// grow. A write that narrows access (a session ended, consent withdrawn,
// a grant revoked, a request rejected, a share, assignment or profile
// removed) is not held to it up front, as the store-side budgets hold no
// narrowing (takeSelfService, takeConsentChange, takeRows):
// refusing one would leave in force the access its caller asked to end,
// and what it records follows a change that widened, which was counted.
//
// A narrowing that finds nothing left to narrow is another matter: it may
// retry one whose reply or eviction was lost, so it records again and
// publishes its eviction to every replica (evictAgain), and it follows
// nothing: a caller could repeat it without end, each costing every
// replica. That one takes from the caller's budget (spend), as a widening
// write does, and so does what a route that may narrow does that widens
// (consent given). A narrowing refused so has nothing left to narrow, so
// the refusal leaves no access in force.
type writeBudgetKey struct{}

// WithWriteBudget returns ctx carrying take, which takes one write from
// the budget of the caller ctx serves or answers why not (a RateLimited
// error). The API serves a write that may narrow access with it instead
// of taking from the budget before the write, so that only what narrows
// nothing is counted.
func WithWriteBudget(ctx context.Context, take func() error) context.Context {
	return context.WithValue(ctx, writeBudgetKey{}, take)
}

// spend takes one write from the budget ctx carries (WithWriteBudget),
// for a write that does not narrow access; nil when ctx carries none (the
// write was counted before it began, or is not a caller's).
func spend(ctx context.Context) error {
	if take, ok := ctx.Value(writeBudgetKey{}).(func() error); ok {
		return take()
	}
	return nil
}
