package identity_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/deputyhq/deputy/sidecar/identity"
)

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	_, ek, _, _ := keys(t)
	cases := []struct {
		name     string
		set      string
		wantKids []string
	}{
		{name: "signing key kept", set: string(jwks(ek)), wantKids: []string{ek.kid}},
		{name: "encryption, HMAC and unknown keys skipped", set: `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"},` +
			publicJSON(ek, "sig") + `,` + publicJSON(testKey{"enc-1", ek.alg, ek.key}, "enc") +
			`,{"kty":"PQC","kid":"future"}]}`, wantKids: []string{ek.kid}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.ParseJWKS([]byte(tc.set))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.wantKids) {
				t.Fatalf("kept %d keys, want %d", len(got), len(tc.wantKids))
			}
			for i, k := range got {
				if k.KeyID != tc.wantKids[i] || !k.IsPublic() {
					t.Fatalf("key %d = %s (public %v)", i, k.KeyID, k.IsPublic())
				}
			}
		})
	}
}

func publicJSON(k testKey, use string) string {
	pub := k.public()
	pub.Use = use
	b, err := json.Marshal(pub)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func FuzzParseJWKS(f *testing.F) {
	_, ek, _, _ := keys(f)
	f.Add(jwks(ek))
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := identity.ParseJWKS(data)
		if err == nil && len(got) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range got {
			if !k.IsPublic() || !k.Valid() {
				t.Fatalf("kept a non-public or invalid key %+v", k)
			}
		}
	})
}
