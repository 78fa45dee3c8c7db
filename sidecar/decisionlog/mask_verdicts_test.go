package decisionlog

import (
	"fmt"
	"testing"
)

// A header name's verdict is remembered, and answers as judging it afresh
// does, for secret and plain names in every spelling; a client sending
// new names on every request fills the memory to its bound and no further.
func TestHeaderVerdictsRememberedAndBounded(t *testing.T) {
	cfg := Defaults()
	cfg.MaskHeaders = []string{"x-principal"}
	m := newMasker(cfg)
	names := []string{"authorization", "Authorization", "cookie", "x-principal", "X_Principal", "x-api-key", "x-shopify-hmac-sha256",
		"tok%65n", "accept", "user-agent", "x-request-id", "content-type", "x-otp", "x-hotpink"}
	for round := range 3 {
		for _, name := range names {
			want := anySpelling(name, m.secretHeaderAsSent)
			if got := m.secretHeader(name); got != want {
				t.Fatalf("round %d: %s: secret %v, judged afresh %v", round, name, got, want)
			}
		}
	}
	for _, name := range names {
		if _, ok := m.verdicts[name]; !ok {
			t.Errorf("%s: verdict not remembered", name)
		}
	}
	for i := range 3 * maxHeaderVerdicts {
		name := fmt.Sprintf("x-new-%d", i)
		if m.secretHeader(name) {
			t.Fatalf("%s judged secret", name)
		}
	}
	if n := len(m.verdicts); n != maxHeaderVerdicts {
		t.Errorf("%d verdicts remembered, want the bound %d", n, maxHeaderVerdicts)
	}
	// Past the bound a secret name is still judged as one.
	if !m.secretHeader("x-brand-new-token") {
		t.Error("x-brand-new-token past the bound: not judged secret")
	}
}
