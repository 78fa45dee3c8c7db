package envoy

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/authz"
)

// The lists a check's answer carries are built by clientCopies, which
// indexes long lists; removeClientCopies, below, is how they were built
// before, one search of every list per header, and the test's oracle:
// for any headers, answer and list, both list the same names in the same
// order.
func TestClientCopiesAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 1))
	for i := range 4000 {
		checkClientCopies(t, rng, i)
	}
}

func FuzzClientCopiesAsBefore(f *testing.F) {
	for _, seed := range []uint64{1, 2, 3, 51, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		checkClientCopies(t, rand.New(rand.NewPCG(seed, seed>>7)), int(seed))
	})
}

// spellingBases are names whose spellings the generated headers, removals
// and set headers share: owned ones, cleared families, the names Envoy
// sets, and non-ASCII and invalid bytes that strings.EqualFold folds in
// its own way (the Kelvin sign reads as k, "ſ" as s, every invalid byte
// as every other).
var spellingBases = []string{
	"x-deputy-subject", "x-deputy-a1", "x-deputy-a2", "x-deputy-k", "x-deputy-s",
	"x-forwarded-for", "x-forwarded-uid", "x-forwarded-proto", "x-forwarded-client-cert",
	"x-auth-request-user", "remote-user", "remote-addr", "x-user-role", "x-current-user",
	"accept", "cookie", "x-deputy-\u212a", "x-deputy-\u017f", "x-deputy-\xff", "x-deputy-\xfe", "x-deputy-\uFFFD",
	"x-deputy-ß", "x-deputy-SS",
}

// respell is base in a random spelling: each letter in either case, each
// "-" maybe as "_".
func respell(rng *rand.Rand, base string) string {
	b := []byte(base)
	for i, c := range b {
		switch {
		case c == '-' && rng.IntN(4) == 0:
			b[i] = '_'
		case 'a' <= c && c <= 'z' && rng.IntN(3) == 0:
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

func spellings(rng *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		base := spellingBases[rng.IntN(len(spellingBases))]
		if rng.IntN(3) == 0 {
			base += string(rune('a' + rng.IntN(3)))
		}
		out[i] = respell(rng, base)
	}
	return out
}

func checkClientCopies(t *testing.T, rng *rand.Rand, i int) {
	t.Helper()
	// Short and long lists, so that both ways of looking up are taken.
	size := func() int {
		if rng.IntN(2) == 0 {
			return rng.IntN(shortList + 1)
		}
		return shortList + 1 + rng.IntN(60)
	}
	removed := spellings(rng, size())
	removals := removed
	if rng.IntN(3) == 0 {
		removals = spellings(rng, size())
	}
	var set [2][]authz.Header
	for j := range set {
		for _, n := range spellings(rng, rng.IntN(4)) {
			set[j] = append(set[j], authz.Header{Key: n, Value: "v"})
		}
	}
	names := spellings(rng, rng.IntN(120))
	before := slices.Clone(removals)

	want, copied := removals, false
	for _, n := range names {
		want = removeClientCopies(want, &copied, n, removed, set[0], set[1])
	}
	c := newClientCopies(removals, removed, set[0], set[1])
	for _, n := range names {
		c.add(n)
	}
	if !slices.Equal(c.removals, want) {
		t.Fatalf("case %d: headers %q, removed %q, removals %q, set %q:\nlisted %q\nwant   %q",
			i, names, removed, removals, set, c.removals, want)
	}
	if !slices.Equal(removals, before) {
		t.Fatalf("case %d: the answer's list was written through: %q, was %q", i, removals, before)
	}
}

// Names of one folded spelling are strings.EqualFold exactly when their
// foldKeys are equal.
func TestFoldKeyIsEqualFold(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 51))
	for range 20000 {
		a, b := spellings(rng, 2)[0], spellings(rng, 2)[1]
		if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
			t.Fatalf("foldKey(%q) == foldKey(%q) is %v, strings.EqualFold %v", a, b, got, want)
		}
	}
}

// removeClientCopies is removals with name (as sent) added when it is of
// a cleared family or another spelling of a header the answer sets
// (respelled) or removes (respelledName: removed is the answer's own
// list), not listed yet, and not a name
// the answer sets (set: Envoy removes after it sets, so listing it would
// remove the policy's or Deputy's own value; setting it already replaces
// the client's). Nothing is allocated for the common name, and removals
// is copied before the first addition, so a response's own list is never
// written through.
func removeClientCopies(removals []string, copied *bool, name string, removed []string, set ...[]authz.Header) []string {
	if !clientPrefixed(name) && !respelled(name, set) && !respelledName(name, removed) {
		return removals
	}
	for _, hs := range set {
		for _, h := range hs {
			if strings.EqualFold(h.Key, name) {
				return removals
			}
		}
	}
	lower := strings.ToLower(name)
	for _, s := range removals {
		if strings.EqualFold(s, lower) {
			return removals
		}
	}
	if !*copied {
		removals = append(make([]string, 0, len(removals)+2), removals...)
		*copied = true
	}
	return append(removals, lower)
}
