package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/deputyhq/deputy/sidecar/actortoken"
)

func runKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(append([]string{"keys", "generate"}, args...))
	err := root.Execute()
	return out.String(), err
}

// The key a generated PEM or Secret holds is one Deputy signs with.
func TestKeysGenerate(t *testing.T) {
	loads := func(t *testing.T, pemKey []byte) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "k.pem")
		if err := os.WriteFile(path, pemKey, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := actortoken.LoadKeyFile(path)
		if err != nil {
			t.Fatalf("deputy cannot load the generated key: %v", err)
		}
		if k.Algorithm != "ES256" {
			t.Fatalf("algorithm %s", k.Algorithm)
		}
	}
	t.Run("pem", func(t *testing.T) {
		out, err := runKeys(t)
		if err != nil {
			t.Fatal(err)
		}
		loads(t, []byte(out))
		again, _ := runKeys(t)
		if again == out {
			t.Fatal("two runs printed the same key")
		}
	})
	t.Run("secret", func(t *testing.T) {
		out, err := runKeys(t, "--secret", "deputy-signing-keys", "--namespace", "shop", "--key-name", "2026-11.pem")
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string
			Metadata   struct{ Name, Namespace string }
			Type       string
			Data       map[string]string
		}
		if err := yaml.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, out)
		}
		if s.APIVersion != "v1" || s.Kind != "Secret" || s.Metadata.Name != "deputy-signing-keys" || s.Metadata.Namespace != "shop" || len(s.Data) != 1 {
			t.Fatalf("secret %+v", s)
		}
		pemKey, err := base64.StdEncoding.DecodeString(s.Data["2026-11.pem"])
		if err != nil {
			t.Fatal(err)
		}
		loads(t, pemKey)
	})
	for _, bad := range [][]string{{"--key-name", "a/b.pem"}, {"--secret", "Bad_Name"}, {"--secret", "ok", "--namespace", "x y"}} {
		t.Run("refuses "+strings.Join(bad, " "), func(t *testing.T) {
			if out, err := runKeys(t, bad...); err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
		})
	}
}
