package identity

import (
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/deputyhq/deputy/sidecar"
)

// RefusalTTL is how long a refused token is remembered. Only refusals
// that neither time nor a key set change can lift are remembered, so the
// bound is on memory, not on correctness.
const RefusalTTL = time.Minute

// maxPlainRefusal is the longest refused token kept as it is; a longer
// one is kept by its SHA-256. The refusals then hold at most
// DefaultCacheSize times this (2 MiB) however large the junk a client
// sends.
const maxPlainRefusal = 512

// refusalKey names a refused token: the token itself when it is short, as
// bearer tokens of the OPA-Envoy kind are (a check then pays no SHA-256 of
// a token it sees again, about a twentieth of the check), its SHA-256
// otherwise. Either way no other token can be made to share it, and
// hashed says which of the two s holds, so a short token can never stand
// for the hash of a long one.
type refusalKey struct {
	s      string
	hashed bool
}

func refusalKeyOf(token string) refusalKey {
	if len(token) <= maxPlainRefusal {
		return refusalKey{s: token}
	}
	sum := sha256.Sum256([]byte(token))
	return refusalKey{s: string(sum[:]), hashed: true}
}

// verdicts remembers what the verifier concluded about recently presented
// tokens, so that a repeated token costs a lookup instead of a parse and
// a signature check. Each verdict holds only under the key set it was
// reached with: a refresh that changes the keys makes every earlier
// verdict void. Proven identities and refusals live in separate LRUs so
// that a flood of junk tokens cannot evict the identities. Identities are
// keyed by the token itself (it is only stored once its signature
// verified), refusals by refusalKey.
type verdicts struct {
	ids      *lru.Cache[string, proven]
	refusals *lru.Cache[refusalKey, refusal]
}

// proven is a verified token's identity; it is served only while now is
// before exp plus leeway.
type proven struct {
	id   *sidecar.Identity
	exp  time.Time
	keys *keyIndex
}

// refusal is a refused token's error, served until the given time.
type refusal struct {
	err   error
	until time.Time
	keys  *keyIndex
}

// newVerdicts bounds each cache to size entries; 0 turns both off.
func newVerdicts(size int) *verdicts {
	if size <= 0 {
		return nil
	}
	ids, _ := lru.New[string, proven](size)
	refusals, _ := lru.New[refusalKey, refusal](size)
	return &verdicts{ids: ids, refusals: refusals}
}

// lookup returns the remembered verdict on a token, if one still holds
// under keys at now: an identity (err nil) or a refusal (id nil).
func (c *verdicts) lookup(token string, keys *keyIndex, now time.Time, leeway time.Duration) (id *sidecar.Identity, err error, ok bool) {
	if c == nil {
		return nil, nil, false
	}
	// Peek, not Get: lookups share a read lock, and for entries that
	// expire with their token within the hour, eviction by insertion
	// order serves as well as by use.
	if p, hit := c.ids.Peek(token); hit && p.keys == keys && now.Before(p.exp.Add(leeway)) {
		return p.id, nil, true
	}
	if r, hit := c.refusals.Get(refusalKeyOf(token)); hit && r.keys == keys && now.Before(r.until) {
		return nil, r.err, true
	}
	return nil, nil, false
}

// remember records a verdict reached under keys.
func (c *verdicts) remember(token string, keys *keyIndex, now time.Time, id *sidecar.Identity, exp time.Time, err error) {
	if c == nil {
		return
	}
	// token is a slice of the header it came in, which may be far longer
	// (white space around it): what is kept is a copy of the token alone,
	// or each entry would hold the whole header.
	if err == nil {
		c.ids.Add(strings.Clone(token), proven{id: id, exp: exp, keys: keys})
		return
	}
	if sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED {
		return // not a judgement on the token
	}
	switch sidecar.ErrorReason(err) {
	case ReasonNotYetValid, ReasonUnknownKid, ReasonStaleKeys:
		// Time lifts the first; the others must reach refreshOnMiss
		// again once its rate bound has passed (a fetch that confirms
		// stale keys unchanged leaves the key index as it was).
		return
	}
	until := now.Add(RefusalTTL)
	var nk *noKidNoKey
	if errors.As(err, &nk) && nk.retry.Before(until) {
		// Kept while no fetch may bring the token's key: a junk token
		// without a kid costs its signature checks once per
		// MinRefreshInterval, and a token of a key rotated in unseen
		// still reaches refreshOnMiss as soon as the fetch is allowed.
		until = nk.retry
	}
	if !now.Before(until) {
		return
	}
	k := refusalKeyOf(token)
	if !k.hashed {
		k.s = strings.Clone(k.s)
	}
	c.refusals.Add(k, refusal{err: err, until: until, keys: keys})
}

// purge forgets every verdict: the key set changed.
func (c *verdicts) purge() {
	if c == nil {
		return
	}
	c.ids.Purge()
	c.refusals.Purge()
}
