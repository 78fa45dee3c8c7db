package redis

import (
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// hashTag is what Redis Cluster hashes of key: the first {...} that
// holds something, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// A narrowing write's barrier must be in the slot of what it wrote: on
// another master, WAIT would say nothing of the write. For each kind of
// invalidation key, the barrier shares its hash tag with the record the
// narrowing writes change.
func TestBarrierInTheWrittenSlot(t *testing.T) {
	s := &Store{prefix: "deputy"}
	for _, tc := range []struct{ key, written string }{
		{sidecar.SessionKey("tok"), s.sessionKey("s1")},
		{sidecar.ConsentKey("Acme"), s.consentKey("Acme")},
		{sidecar.CustomerKey("Acme"), s.customerKey("Acme")},
		{sidecar.GrantKey("Acme"), s.cust("Acme", "grants")},
		{sidecar.ShareKey("Acme"), s.cust("Acme", "shares")},
		{sidecar.AssignmentKey("Acme"), s.assignKey("Acme")},
	} {
		if b := s.barrierKey(tc.key); hashTag(b) != hashTag(tc.written) {
			t.Errorf("barrier of %s is %q, in another slot than %q", tc.key, b, tc.written)
		}
	}
	if b := s.barrierKey("custom:1"); b != "" {
		t.Errorf("barrier of a key naming no record: %q, want none", b)
	}
}
