package policy_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// signedAt builds the good fixture signed by priv with the given signing
// time (iat).
func signedAt(t *testing.T, priv, rev, label string, at time.Time) []byte {
	t.Helper()
	return build(t, rev, label, &policy.SignOptions{Key: priv, IssuedAt: at})
}

// signedWithoutIat signs as Deputy did before bundles carried a signing
// time: OPA's signing with no claims beyond the files.
func signedWithoutIat(t *testing.T, priv, rev, label string) []byte {
	t.Helper()
	b, err := policy.BuildBundle([]string{good}, policy.BuildOptions{Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	b.Data = map[string]any{"deputy": map[string]any{"authz": map[string]any{"label": label}}}
	key, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(string(key), policy.AlgES256, ""), "", false); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := policy.WriteBundle(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSignedAtRoundTrips(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for name, tar := range map[string][]byte{
		"signed with a time":    signedAt(t, priv, "r1", "v1", at),
		"signed without a time": signedWithoutIat(t, priv, "r1", "v1"),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := policy.ReadBundle(bytes.NewReader(tar), policy.ReadOptions{PublicKey: pub})
			if err != nil {
				t.Fatal(err)
			}
			got, err := policy.SignedAt(b)
			if err != nil {
				t.Fatal(err)
			}
			want := at
			if strings.Contains(name, "without") {
				want = time.Time{}
			}
			if !got.Equal(want) {
				t.Fatalf("signed at %v, want %v", got, want)
			}
		})
	}
}

// A bundle server (or whoever answers in its place) serves an older bundle,
// validly signed, that granted more: it is refused, counted, and the newer
// revision keeps serving.
func TestURLSourceRefusesOlderSignedBundle(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	current := signedAt(t, priv, "v2-new", "narrow", t0)
	cases := []struct {
		name    string
		body    []byte
		wantErr string // empty: activated
		wantRev string
	}{
		{name: "older bundle", body: signedAt(t, priv, "v1-old-broad", "broad", t0.Add(-time.Hour)), wantErr: "before revision"},
		{name: "older by a second", body: signedAt(t, priv, "v1-old-broad", "broad", t0.Add(-time.Second)), wantErr: "before revision"},
		{name: "no signing time", body: signedWithoutIat(t, priv, "v1-old-broad", "broad"), wantErr: "no signing time"},
		{name: "same second, other revision", body: signedAt(t, priv, "v2-other", "broad", t0), wantErr: "same second"},
		{name: "same second, same revision", body: signedAt(t, priv, "v2-new", "narrow", t0), wantRev: "v2-new"},
		{name: "newer bundle", body: signedAt(t, priv, "v3", "v3", t0.Add(time.Second)), wantRev: "v3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBundleServer(t, current)
			src, e, failures := startSource(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, PollInterval: time.Hour})
			ctx := context.Background()
			if rev, _ := decide(t, e); rev != "v2-new" {
				t.Fatalf("serving %s at start, want v2-new", rev)
			}

			srv.serve(tc.body, http.StatusOK)
			err := src.Reload(ctx)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("reload: %v", err)
				}
				if rev, _ := decide(t, e); rev != tc.wantRev {
					t.Fatalf("serving %s, want %s", rev, tc.wantRev)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("reload err = %v, want it to mention %q", err, tc.wantErr)
			}
			if rev, lbl := decide(t, e); rev != "v2-new" || lbl != "narrow" {
				t.Errorf("serving %s/%s, want v2-new/narrow still", rev, lbl)
			}
			if st := src.Status(); !st.Ready || st.Failures != 1 || !strings.Contains(st.LastError, tc.wantErr) {
				t.Errorf("status = %+v, want ready with the refusal recorded", st)
			}
			if failures.Load() != 1 {
				t.Errorf("OnAttempt saw %d failures, want 1", failures.Load())
			}

			// The refused bundle is not activated on a later poll either,
			// and a newer one still is.
			if err := src.Reload(ctx); err != nil {
				t.Fatalf("second poll of the same refused bundle: %v", err)
			}
			if rev, _ := decide(t, e); rev != "v2-new" {
				t.Fatalf("serving %s after a second poll, want v2-new", rev)
			}
			srv.serve(signedAt(t, priv, "v3", "v3", t0.Add(time.Minute)), http.StatusOK)
			if err := src.Reload(ctx); err != nil {
				t.Fatalf("newer bundle: %v", err)
			}
			if rev, _ := decide(t, e); rev != "v3" {
				t.Errorf("serving %s, want v3", rev)
			}
		})
	}
}

// A replica that starts while the server hands out an old bundle refuses
// it under policy.min_signed_at, stays unready, and serves the first bundle
// signed at or after it.
func TestMinSignedAtRefusesOldBundlesAtStart(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	min := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		body    []byte
		wantErr string
	}{
		{name: "signed before", body: signedAt(t, priv, "v1-old-broad", "broad", min.Add(-time.Second)), wantErr: "before 2026-06-01T12:00:00Z"},
		{name: "no signing time", body: signedWithoutIat(t, priv, "v1-old-broad", "broad"), wantErr: "no signing time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBundleServer(t, tc.body)
			// A bundle server's failure at start is retried, not fatal.
			src, e, _ := startSource(t, policy.Config{BundleURL: srv.URL, PublicKey: pub, MinSignedAt: min.Format(time.RFC3339), PollInterval: time.Hour})
			ctx := context.Background()
			if st := src.Status(); e.Ready() || st.Ready || !strings.Contains(st.LastError, tc.wantErr) || !strings.Contains(st.LastError, "policy.min_signed_at") {
				t.Fatalf("ready %v, status %+v; want unready, refused with %q", e.Ready(), st, tc.wantErr)
			}
			srv.serve(signedAt(t, priv, "v2-new", "narrow", min), http.StatusOK)
			if err := src.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if rev, _ := decide(t, e); rev != "v2-new" {
				t.Fatalf("serving %s, want v2-new", rev)
			}
		})
	}
}

// The same holds for a watched bundle file: an older bundle written over a
// newer one is refused and the newer one keeps serving.
func TestWatchedBundleFileRefusesOlderSignedBundle(t *testing.T) {
	priv, pub := keyPair(t, policy.AlgES256)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "deputy.tar.gz")
	write := func(tar []byte) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, tar, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(signedAt(t, priv, "v2-new", "narrow", t0))
	src, e, _ := startSource(t, policy.Config{BundleFile: path, PublicKey: pub, Watch: true, PollInterval: 10 * time.Millisecond})

	write(signedAt(t, priv, "v1-old-broad", "broad", t0.Add(-time.Hour)))
	waitFor(t, "the older bundle refused", func() bool { return strings.Contains(src.Status().LastError, "before revision") })
	if rev, lbl := decide(t, e); rev != "v2-new" || lbl != "narrow" {
		t.Fatalf("serving %s/%s, want v2-new/narrow still", rev, lbl)
	}

	write(signedAt(t, priv, "v3", "v3", t0.Add(time.Hour)))
	waitFor(t, "the newer bundle activated", func() bool { return src.Status().Revision == "v3" })
	if st := src.Status(); st.LastError != "" || st.Failures != 0 {
		t.Errorf("status after the newer bundle = %+v, want the refusal cleared", st)
	}
}
