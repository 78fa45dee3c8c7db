package tests

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The helm template / GitOps path docs/deploy.md documents: a Secret made
// once with `deputy keys generate`, named in the values. Rendering twice
// gives the same manifests, and neither holds a key of its own.
func TestTemplateTwiceKeepsTheKey(t *testing.T) {
	bin := deputyBinary(t)
	out, err := exec.Command(bin, "keys", "generate", "--secret", "deputy-signing-keys", "--key-name", "2026-11.pem").Output()
	if err != nil {
		t.Fatalf("deputy keys generate: %v", err)
	}
	var secret corev1.Secret
	if err := yaml.UnmarshalStrict(out, &secret); err != nil {
		t.Fatalf("the generated Secret does not decode: %v\n%s", err, out)
	}
	if secret.Name != "deputy-signing-keys" || len(secret.Data["2026-11.pem"]) == 0 {
		t.Fatalf("generated Secret %s holds %v", secret.Name, slices.Collect(maps.Keys(secret.Data)))
	}

	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(`app: {image: {repository: registry.example.com/storefront}}
identity: {issuerURLs: ['https://login.example.com/realms/shop'], audiences: [storefront]}
signingKeys:
  existingSecret: deputy-signing-keys
  existingSecretKeys: [2026-11.pem]
  generate: false
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := loadChart(t)
	first, err := render(t, c, values, true)
	if err != nil {
		t.Fatal(err)
	}
	second, err := render(t, c, values, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Fatal("two renders of the same values differ")
	}
	m := decode(t, first)
	for name := range m["Secret"] {
		t.Errorf("rendered Secret %s: the key must come from the Secret made once", name)
	}
	pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
	var keys *corev1.SecretVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == "deputy-keys" {
			keys = v.Secret
		}
	}
	if keys == nil || keys.SecretName != "deputy-signing-keys" {
		t.Fatalf("signing keys volume %+v, want Secret deputy-signing-keys", keys)
	}
}
