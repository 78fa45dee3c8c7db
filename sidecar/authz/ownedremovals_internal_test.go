package authz

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// ownedRemovals indexes the names it has listed once the client sent more
// than a few owned headers; oldOwnedRemovals, below, is how it listed
// them before, one search of the list per header, and the test's oracle:
// for any policy removals, owned headers and injected ones, both list the
// same names in the same order.
func TestOwnedRemovalsAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 2))
	bases := []string{"x-deputy-subject", "x-deputy-actor", "x-deputy-a1", "x-deputy-a2", "x-deputy-\u212a",
		"x-deputy-\xff", "x-on-behalf-of", "x-user-role"}
	spell := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			b := []byte(bases[rng.IntN(len(bases))])
			for j, c := range b {
				switch {
				case c == '-' && rng.IntN(4) == 0:
					b[j] = '_'
				case 'a' <= c && c <= 'z' && rng.IntN(3) == 0:
					b[j] = c - ('a' - 'A')
				}
			}
			out[i] = string(b)
		}
		return out
	}
	for i := range 4000 {
		size := rng.IntN(shortList + 1)
		if rng.IntN(2) == 0 {
			size = shortList + 1 + rng.IntN(60)
		}
		owned := spell(size)
		policy := spell(rng.IntN(6))
		if rng.IntN(2) == 0 {
			for j := range policy {
				policy[j] = strings.ToLower(policy[j])
			}
		}
		var set []Header
		for _, n := range spell(rng.IntN(4)) {
			set = append(set, Header{Key: n, Value: "v"})
		}
		want := oldOwnedRemovals(slices.Clip(slices.Clone(policy)), owned, set)
		got := ownedRemovals(slices.Clip(slices.Clone(policy)), owned, set)
		if !slices.Equal(got, want) {
			t.Fatalf("case %d: policy %q, owned %q, set %q:\nlisted %q\nwant   %q", i, policy, owned, set, got, want)
		}
	}
}

func oldOwnedRemovals(policyRemovals, owned []string, set []Header) []string {
	out := policyRemovals
	for _, o := range owned {
		lo := strings.ToLower(o)
		replaced := false
		for _, h := range set {
			if strings.EqualFold(h.Key, lo) {
				replaced = true
				break
			}
		}
		if !replaced && !slices.Contains(out, lo) {
			out = append(out, lo)
		}
	}
	return out
}
