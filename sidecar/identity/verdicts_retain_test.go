package identity_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memtest"
)

// The verdict caches hold tokens, each bounded (a refusal of more than
// 512 bytes is kept as its SHA-256). A token is a slice of the header it
// was cut from, and 60 KiB of spaces (white space around a header value,
// which proxies strip) + "Bearer " + a short token kept that whole header
// alive with each entry: about 60 KiB a refusal, 257 MiB at the cache's
// 4,096. Each entry now holds a copy of the token alone.
func TestRefusalCacheKeepsTheTokenAlone(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	v := devVerifier(t, dev)
	const n, pad = 2000, 60 << 10
	before := memtest.Live()
	for i := 0; i < n; i++ {
		// built fresh each time, as a decoded request's header value is
		h := strings.Repeat(" ", pad) + "Bearer " + fmt.Sprintf("junk.%08d.token", i)
		r := &sidecar.Request{Headers: map[string]string{"authorization": h}}
		if id, err := v.Verify(context.Background(), r); err == nil || id != nil {
			t.Fatalf("junk token accepted: %v %v", id, err)
		}
	}
	// The same for tokens that verify, each padded as the junk was.
	for i := 0; i < n/10; i++ {
		tok, err := dev.Mint(identity.DevClaims{Subject: fmt.Sprintf("u%d", i), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		r := &sidecar.Request{Headers: map[string]string{"authorization": strings.Repeat(" ", pad) + "Bearer " + tok}}
		if id, err := v.Verify(context.Background(), r); err != nil || id == nil {
			t.Fatalf("token refused: %v", err)
		}
	}
	after := memtest.Live()
	runtime.KeepAlive(v)
	grown := int64(after) - int64(before)
	t.Logf("heap grew %d bytes for %d refusals (%d per refusal)", grown, n, grown/n)
	if grown > int64(n)*2048 {
		t.Errorf("the verdict caches retain %d bytes per token (a token is at most 512 bytes here): %d MiB for %d refusals and %d identities",
			grown/n, grown>>20, n, n/10)
	}
}
