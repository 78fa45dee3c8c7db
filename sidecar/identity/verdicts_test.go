package identity

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
)

// A refusal is remembered for the token refused and no other: a short
// token under itself, a long one under its hash, and a short token
// spelling a long one's hash names nothing but itself.
func TestRefusalsAreKeptForTheirTokenAlone(t *testing.T) {
	c := newVerdicts(16)
	keys := &keyIndex{}
	now := time.Unix(1_700_000_000, 0)
	refused := unauthorized(ReasonBadSignature, nil)
	long := strings.Repeat("a", maxPlainRefusal+1)
	sum := sha256.Sum256([]byte(long))
	for _, token := range []string{"short.token.x", strings.Repeat("b", maxPlainRefusal), long} {
		c.remember(token, keys, now, nil, time.Time{}, refused)
		if _, err, ok := c.lookup(token, keys, now, 0); !ok || !errors.Is(err, refused) {
			t.Fatalf("token of %d bytes: refusal not remembered (%v, %v)", len(token), err, ok)
		}
	}
	for name, token := range map[string]string{
		"the short token less a byte":     "short.token.",
		"the long token less a byte":      long[:len(long)-1],
		"the long token plus a byte":      long + "a",
		"the long token's hash, as bytes": string(sum[:]),
	} {
		if _, _, ok := c.lookup(token, keys, now, 0); ok {
			t.Errorf("%s: answered from another token's refusal", name)
		}
	}
}
