package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

const chartDir = ".."

// manifests are the decoded objects of one render, by kind then name.
type manifests map[string]map[string]any

func (m manifests) get(t *testing.T, kind, name string) any {
	t.Helper()
	o, ok := m[kind][name]
	if !ok {
		t.Fatalf("no %s %q; have %v", kind, name, m.names())
	}
	return o
}

func (m manifests) names() []string {
	var out []string
	for kind, byName := range m {
		for name := range byName {
			out = append(out, kind+"/"+name)
		}
	}
	sort.Strings(out)
	return out
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// capabilities of a cluster, with or without the Prometheus Operator.
func capabilities(monitoring bool) *chartutil.Capabilities {
	caps := chartutil.DefaultCapabilities.Copy()
	if monitoring {
		caps.APIVersions = append(caps.APIVersions, "monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")
	}
	return caps
}

// render renders the chart with a values file as `helm template` would,
// schema validation included.
func render(t *testing.T, c *chart.Chart, valuesFile string, monitoring bool) (map[string]string, error) {
	t.Helper()
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := chartutil.ReadValuesFile(valuesFile)
		if err != nil {
			t.Fatal(err)
		}
		vals = v
	}
	return renderValues(c, vals, monitoring)
}

// renderValues renders the chart with values given as a map.
func renderValues(c *chart.Chart, vals map[string]any, monitoring bool) (map[string]string, error) {
	opts := chartutil.ReleaseOptions{Name: "shop", Namespace: "storefront", Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(c, vals, opts, capabilities(monitoring))
	if err != nil {
		return nil, err
	}
	return engine.Render(c, rv)
}

// renderYAML renders the chart c with values given as YAML, on a cluster
// without the Prometheus Operator.
func renderYAML(t *testing.T, c *chart.Chart, values string) (map[string]string, error) {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	return renderValues(c, vals, false)
}

// decode strictly decodes every rendered manifest into its API type.
func decode(t *testing.T, out map[string]string) manifests {
	t.Helper()
	m := manifests{}
	files := make([]string, 0, len(out))
	for f := range out {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, file := range files {
		if !strings.HasSuffix(file, ".yaml") {
			continue
		}
		for i, doc := range strings.Split(out[file], "\n---") {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s #%d: %v", file, i, err)
			}
			if string(js) == "null" {
				continue // comments only
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(js, &head); err != nil {
				t.Fatalf("%s #%d: %v", file, i, err)
			}
			obj := newObject(head.APIVersion, head.Kind)
			if obj == nil {
				t.Fatalf("%s #%d: unexpected %s %s", file, i, head.APIVersion, head.Kind)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Fatalf("%s #%d (%s %s): %v\n%s", file, i, head.Kind, head.Metadata.Name, err, doc)
			}
			if m[head.Kind] == nil {
				m[head.Kind] = map[string]any{}
			}
			if _, dup := m[head.Kind][head.Metadata.Name]; dup {
				t.Fatalf("%s %q rendered twice", head.Kind, head.Metadata.Name)
			}
			m[head.Kind][head.Metadata.Name] = obj
		}
	}
	return m
}

func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

func mustRender(t *testing.T, valuesFile string, monitoring bool) manifests {
	t.Helper()
	out, err := render(t, loadChart(t), valuesFile, monitoring)
	if err != nil {
		t.Fatalf("render %s: %v", valuesFile, err)
	}
	return decode(t, out)
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// Every values file renders, and every manifest decodes strictly.
func TestRenderValuesFiles(t *testing.T) {
	tests := []struct {
		values     string
		monitoring bool
		want       []string // kind/name that must be there
		absent     []string // kinds that must not
	}{
		{
			values:     "default.yaml",
			monitoring: true,
			want: []string{"Deployment/shop-deputy", "Service/shop-deputy", "ServiceAccount/shop-deputy",
				"ConfigMap/shop-deputy-config", "ConfigMap/shop-deputy-policies", "ConfigMap/shop-deputy-envoy",
				"Secret/shop-deputy-keys", "ServiceMonitor/shop-deputy", "PodDisruptionBudget/shop-deputy",
				"NetworkPolicy/shop-deputy"},
			absent: []string{"HorizontalPodAutoscaler"},
		},
		{
			values:     "sidecar-only.yaml",
			monitoring: true,
			want:       []string{"ConfigMap/shop-deputy-sidecar", "ConfigMap/shop-deputy-config", "ConfigMap/shop-deputy-policies", "NetworkPolicy/shop-deputy"},
			absent:     []string{"Deployment", "Service", "ServiceMonitor", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret"},
		},
		{
			values:     "bundle-url.yaml",
			monitoring: true,
			want:       []string{"Deployment/shop-deputy", "ConfigMap/shop-deputy-config"},
		},
		{
			values:     "redis.yaml",
			monitoring: true,
			want:       []string{"Deployment/shop-deputy", "HorizontalPodAutoscaler/shop-deputy", "Secret/shop-deputy-redis", "Secret/shop-deputy-keys"},
		},
		{
			values:     "monitoring-off.yaml",
			monitoring: true,
			want:       []string{"Deployment/shop-deputy"},
			absent:     []string{"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"},
		},
		{
			values:     "http-ext-authz.yaml",
			monitoring: false,
			want:       []string{"Deployment/shop-deputy", "ConfigMap/shop-deputy-envoy"},
			absent:     []string{"ServiceMonitor", "PrometheusRule"},
		},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.values, ".yaml"), func(t *testing.T) {
			m := mustRender(t, filepath.Join("testdata", tc.values), tc.monitoring)
			for _, w := range tc.want {
				kind, name, _ := strings.Cut(w, "/")
				m.get(t, kind, name)
			}
			for _, kind := range tc.absent {
				if len(m[kind]) > 0 {
					t.Errorf("%s rendered: %v", kind, m.names())
				}
			}
			if _, ok := m["ConfigMap"]["shop-deputy-policies"]; ok && tc.values == "bundle-url.yaml" {
				t.Error("policies ConfigMap rendered with a bundle source")
			}
		})
	}
}

// The monitoring objects appear only where the Prometheus Operator serves
// their API, whatever the values say.
func TestMonitoringNeedsOperatorAPI(t *testing.T) {
	for _, withAPI := range []bool{true, false} {
		t.Run(fmt.Sprintf("api=%v", withAPI), func(t *testing.T) {
			m := mustRender(t, "testdata/default.yaml", withAPI)
			if got := len(m["ServiceMonitor"]) > 0; got != withAPI {
				t.Errorf("ServiceMonitor rendered = %v", got)
			}
			// The chart ships its alert rules and dashboard: both must render.
			wantRule := withAPI
			if got := len(m["PrometheusRule"]) > 0; got != wantRule {
				t.Errorf("PrometheusRule rendered = %v, want %v", got, wantRule)
			}
			if wantRule {
				r := m.get(t, "PrometheusRule", "shop-deputy").(*monitoringv1.PrometheusRule)
				if len(r.Spec.Groups) == 0 || len(r.Spec.Groups[0].Rules) == 0 {
					t.Error("PrometheusRule has no rules")
				}
			}
			// The dashboard is a plain ConfigMap: rendered either way.
			cm := m.get(t, "ConfigMap", "shop-deputy-dashboard-deputy").(*corev1.ConfigMap)
			if !json.Valid([]byte(cm.Data["deputy.json"])) {
				t.Error("dashboard is not valid JSON")
			}
			if cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("dashboard labels %v", cm.Labels)
			}
		})
	}
}

func TestPodHardening(t *testing.T) {
	m := mustRender(t, "testdata/default.yaml", true)
	d := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment)
	pod := d.Spec.Template.Spec
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod may run as root")
	}
	names := []string{}
	for _, c := range pod.Containers {
		names = append(names, c.Name)
		t.Run(c.Name, func(t *testing.T) {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("root filesystem writable")
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("privilege escalation allowed")
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Error("capabilities not dropped")
			}
		})
	}
	if want := []string{"app", "envoy", "deputy"}; !slices.Equal(names, want) {
		t.Errorf("containers %v, want %v", names, want)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("service account token mounted: Deputy needs no Kubernetes API")
	}
}

func TestDeputyProbes(t *testing.T) {
	tests := []struct {
		values        string
		readinessGRPC bool
		grpcAddr      string
	}{
		{"default.yaml", false, "--grpc-addr=127.0.0.1:9191"},
		{"http-ext-authz.yaml", false, "--grpc-addr=127.0.0.1:9191"},
		{"grpc-probe.yaml", true, "--grpc-addr=:9191"},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.values, ".yaml"), func(t *testing.T) {
			m := mustRender(t, filepath.Join("testdata", tc.values), true)
			d := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment)
			c := container(t, d.Spec.Template.Spec, "deputy")
			if p := c.LivenessProbe.HTTPGet; p == nil || p.Path != "/healthz" || p.Port.String() != "metrics" {
				t.Errorf("liveness %+v", c.LivenessProbe)
			}
			// Probes leave Redis and the namespaced issuers (partners'
			// identity providers) out, as gRPC health does: neither's
			// outage may unready every replica (DESIGN §6), nor keep new
			// pods from starting.
			const readyz = "/readyz?exclude=redis&exclude=identity_namespaced"
			if p := c.StartupProbe.HTTPGet; p == nil || p.Path != readyz {
				t.Errorf("startup %+v, want %s", c.StartupProbe, readyz)
			}
			if tc.readinessGRPC {
				if p := c.ReadinessProbe.GRPC; p == nil || p.Port != 9191 {
					t.Errorf("readiness %+v, want gRPC health on 9191", c.ReadinessProbe)
				}
			} else if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != readyz {
				t.Errorf("readiness %+v, want %s", c.ReadinessProbe, readyz)
			}
			if !slices.Contains(c.Args, tc.grpcAddr) {
				t.Errorf("args %v lack %s", c.Args, tc.grpcAddr)
			}
			if !slices.Contains(c.Args, "--http-addr=127.0.0.1:8181") {
				t.Errorf("management API not on loopback: %v", c.Args)
			}
		})
	}
}

// Every volume a container mounts exists in the pod.
func TestMountsResolve(t *testing.T) {
	for _, values := range []string{"default.yaml", "bundle-url.yaml", "redis.yaml", "http-ext-authz.yaml"} {
		t.Run(strings.TrimSuffix(values, ".yaml"), func(t *testing.T) {
			m := mustRender(t, filepath.Join("testdata", values), true)
			pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
			checkMounts(t, pod.Containers, pod.Volumes)
		})
	}
}

func checkMounts(t *testing.T, cs []corev1.Container, vols []corev1.Volume) {
	t.Helper()
	have := map[string]bool{}
	for _, v := range vols {
		have[v.Name] = true
	}
	for _, c := range cs {
		for _, vm := range c.VolumeMounts {
			if !have[vm.Name] {
				t.Errorf("container %s mounts missing volume %q", c.Name, vm.Name)
			}
		}
	}
}

// The shipped policies reach the pod at their paths (OPA wants package
// names to match directories), without their tests.
func TestPoliciesMountedAtTheirPaths(t *testing.T) {
	m := mustRender(t, "testdata/default.yaml", true)
	cm := m.get(t, "ConfigMap", "shop-deputy-policies").(*corev1.ConfigMap)
	pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
	var items []corev1.KeyToPath
	for _, v := range pod.Volumes {
		if v.Name == "deputy-policies" {
			items = v.ConfigMap.Items
		}
	}
	var shipped []string
	err := filepath.WalkDir(filepath.Join(chartDir, "..", "..", "policies"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasSuffix(p, "_test.rego") || !(strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, ".json")) {
			return nil
		}
		rel, _ := filepath.Rel(filepath.Join(chartDir, "..", "..", "policies"), p)
		shipped = append(shipped, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var mounted []string
	for _, it := range items {
		mounted = append(mounted, it.Path)
		if _, ok := cm.Data[it.Key]; !ok {
			t.Errorf("item %s names missing key %s", it.Path, it.Key)
		}
		want, err := os.ReadFile(filepath.Join(chartDir, "..", "..", "policies", it.Path))
		if err == nil && cm.Data[it.Key] != string(want) {
			t.Errorf("%s differs from the shipped file: run `make chart-policies`", it.Path)
		}
	}
	sort.Strings(shipped)
	sort.Strings(mounted)
	if len(shipped) == 0 || !slices.Equal(shipped, mounted) {
		t.Errorf("mounted %v, shipped %v: run `make chart-policies`", mounted, shipped)
	}
	if len(cm.Data) != len(items) {
		t.Errorf("%d keys, %d mounted", len(cm.Data), len(items))
	}
}

// The Envoy config the pod runs passes the same strict check as the
// shipped examples, and refuses the same header mutations.
func TestEnvoyConfigIsValid(t *testing.T) {
	tests := []struct {
		values  string
		grpc    bool
		appPort string
	}{
		{"default.yaml", true, "3000"},
		{"http-ext-authz.yaml", false, "8000"},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.values, ".yaml"), func(t *testing.T) {
			m := mustRender(t, filepath.Join("testdata", tc.values), true)
			cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
			b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
			if err != nil {
				t.Fatalf("rendered Envoy config rejected: %v\n%s", err, cm.Data["envoy.yaml"])
			}
			var clusters []string
			for _, c := range b.GetStaticResources().GetClusters() {
				clusters = append(clusters, c.GetName())
				if c.GetName() == "app" {
					port := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
					if fmt.Sprint(port) != tc.appPort {
						t.Errorf("app cluster port %d, want %s", port, tc.appPort)
					}
				}
			}
			if got := slices.Contains(clusters, "deputy_grpc"); got != tc.grpc {
				t.Errorf("clusters %v", clusters)
			}
			// A check answer never steers Envoy's router or changes the
			// host, scheme or method decided on.
			authz, err := envoycheck.ExtAuthz(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoycheck.RefusesControlHeaders(authz); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSidecarOnlyContainer(t *testing.T) {
	m := mustRender(t, "testdata/sidecar-only.yaml", true)
	cm := m.get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap)
	var c corev1.Container
	strictYAML(t, cm.Data["container.yaml"], &c)
	var vols []corev1.Volume
	strictYAML(t, cm.Data["volumes.yaml"], &vols)
	if c.Name != "deputy" || c.Image == "" || c.Args[0] != "serve" {
		t.Errorf("container %+v", c)
	}
	checkMounts(t, []corev1.Container{c}, vols)
	for _, v := range vols {
		if v.Secret != nil && v.Secret.SecretName != "deputy-signing-keys" {
			t.Errorf("signing keys from %q, want the existing Secret", v.Secret.SecretName)
		}
	}
}

func strictYAML(t *testing.T, doc string, into any) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
}

func TestDeputyConfig(t *testing.T) {
	tests := []struct {
		values string
		want   map[string]any // dotted path in config.yaml → value
		absent []string       // paths that must not be set
		env    string         // set from a Secret
	}{
		{
			values: "default.yaml",
			want: map[string]any{
				"policy.paths":          []any{"/etc/deputy/policies"},
				"actor_token.key_files": []any{"/etc/deputy/keys/signing-key.pem"},
				"identity.issuer_urls":  []any{"https://login.example.com/realms/shop"},
				"identity.audiences":    []any{"storefront"},
				"http.check_proxy":      "envoy",
			},
			absent: []string{"policy.bundle_url", "policy.min_signed_at", "redis", "identity.anonymous_only"},
		},
		{
			values: "bundle-url.yaml",
			want: map[string]any{
				"policy.bundle_url":    "https://bundles.example.com/deputy/bundle.tar.gz",
				"policy.public_key":    "/etc/deputy/bundle/public.pem",
				"policy.poll_interval": "30s",
				"policy.min_signed_at": "2026-11-01T00:00:00Z",
				"policy.paths":         []any{},
				"http.check_proxy":     "envoy",
			},
			env: "DEPUTY_POLICY_BEARER_TOKEN",
		},
		{
			values: "redis.yaml",
			want: map[string]any{
				"redis.master_name":        "deputy",
				"redis.require_aof":        true,
				"redis.narrowing_replicas": "1",
				"redis.addrs":              []any{"sentinel-0.sentinel:26379", "sentinel-1.sentinel:26379", "sentinel-2.sentinel:26379"},
				"impersonation.redeem_ttl": "20s",
				// The newest key signs: the order of the values is kept.
				"actor_token.key_files": []any{"/etc/deputy/keys/2026-11.pem", "/etc/deputy/keys/2026-08.pem"},
				"http.check_proxy":      "envoy",
			},
			absent: []string{"redis.password"},
			env:    "DEPUTY_REDIS_PASSWORD",
		},
		{
			// Deputy reads a body of exactly Envoy's limit as possibly
			// cut: the two limits are the same number.
			values: "http-ext-authz.yaml",
			want: map[string]any{
				"http.check_proxy":    "envoy",
				"http.max_body_bytes": float64(65536),
			},
		},
		{
			values: "any-audience.yaml",
			want: map[string]any{
				"identity.issuer_urls":  []any{"https://login.example.com/realms/shop"},
				"identity.any_audience": true,
			},
			absent: []string{"identity.audiences"},
		},
		{
			values: "sidecar-only.yaml",
			want: map[string]any{
				"actor_token.key_files": []any{"/etc/deputy/keys/current.pem", "/etc/deputy/keys/previous.pem"},
				"http.check_proxy":      "envoy",
			},
			absent: []string{"actor_token.sign_key_file"},
		},
		{
			// The first step of a rotation: the new key listed, published,
			// while the old one still signs.
			values: "rotation.yaml",
			want: map[string]any{
				"actor_token.key_files":     []any{"/etc/deputy/keys/2026-11.pem", "/etc/deputy/keys/2026-08.pem"},
				"actor_token.sign_key_file": "/etc/deputy/keys/2026-08.pem",
			},
		},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.values, ".yaml"), func(t *testing.T) {
			m := mustRender(t, filepath.Join("testdata", tc.values), true)
			raw := m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.want {
				got, ok := lookup(cfg, path)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v\n%s", path, got, want, raw)
				}
			}
			for _, path := range tc.absent {
				if _, ok := lookup(cfg, path); ok {
					t.Errorf("%s set:\n%s", path, raw)
				}
			}
			if strings.Contains(raw, "s3cret") {
				t.Error("Redis password in a ConfigMap")
			}
			if tc.env != "" {
				var pod corev1.PodSpec
				if d, ok := m["Deployment"]["shop-deputy"]; ok {
					pod = d.(*appsv1.Deployment).Spec.Template.Spec
				}
				c := container(t, pod, "deputy")
				found := false
				for _, e := range c.Env {
					if e.Name == tc.env {
						found = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
					}
				}
				if !found {
					t.Errorf("no %s from a Secret in %+v", tc.env, c.Env)
				}
			}
		})
	}
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// A generated signing key is an ECDSA key Deputy can sign with.
func TestGeneratedSigningKey(t *testing.T) {
	m := mustRender(t, "testdata/default.yaml", true)
	s := m.get(t, "Secret", "shop-deputy-keys").(*corev1.Secret)
	pem := string(s.Data["signing-key.pem"])
	if !strings.HasPrefix(pem, "-----BEGIN EC PRIVATE KEY-----") {
		t.Errorf("generated key %.40q", pem)
	}
	if s.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("signing keys would be deleted with the release")
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid values files: %v", err)
	}
	c := loadChart(t)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			_, err := render(t, c, f, true)
			if err == nil {
				t.Fatal("values accepted")
			}
			if !strings.Contains(err.Error(), "schema") {
				t.Errorf("rejected, but not by the schema: %v", err)
			}
		})
	}
}

// Combinations the schema cannot express fail the render with a message
// that says what to set.
func TestRenderRefusesUnsafeCombinations(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   string
	}{
		{"no application image", "{identity: {anonymousOnly: true}}", "app.image.repository"},
		// Deputy does not start without an issuer: the pod would crash-loop.
		{"no identity issuer", "{app: {image: {repository: x}}}", "identity.issuerURLs is required"},
		{"no identity issuer, sidecar-only", "{mode: sidecar-only, networkPolicy: {podSelector: {app: shop}, ports: [8080]}}", "identity.issuerURLs is required"},
		{"anonymous only switched off in config", "{app: {image: {repository: x}}, deputy: {config: {identity: {anonymous_only: false}}}}", "identity.issuerURLs is required"},
		{"replicas without redis", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, replicaCount: 2}", "redis.enabled"},
		{"autoscaling without redis", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, autoscaling: {enabled: true}}", "redis.enabled"},
		// The workload Deputy joins usually runs several replicas, each
		// Deputy then keeping sessions, consents and grants of its own.
		{"sidecar-only without redis", "{mode: sidecar-only, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: shop}, ports: [8080]}}", "singleReplica"},
		{"bundle without url", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: bundle, bundle: {publicKey: k}}}", "policies.bundle.url"},
		{"unsigned bundle", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: bundle, bundle: {url: 'https://b.example.com/b.tar.gz'}}}", "publicKey"},
		{"redis without address", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true}}", "redis.addrs"},
		{"several redis addresses, neither cluster nor sentinel", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, addrs: ['a:6379', 'b:6379']}}", "redis.cluster"},
		{"sentinel and cluster", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, cluster: true, masterName: m, addrs: ['a:6379']}}", "redis.masterName"},
		{"cluster with a db", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, cluster: true, db: 2, addrs: ['a:6379']}}", "redis.db"},
		{"redis user without a password", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, addrs: ['r:6379'], username: deputy}}", "redis.username"},
		{"existing secret without key names", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, signingKeys: {existingSecret: keys}}", "signingKeys.existingSecretKeys"},
		{"no key and generation off", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, signingKeys: {generate: false}}", "deputy keys generate"},
		// A key signs only once it is published: it must be one listed.
		{"signing with a key not listed", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, signingKeys: {existingSecret: keys, existingSecretKeys: [2026-08.pem], signWith: 2026-11.pem}}", "signingKeys.signWith"},
		{"signing with a key not given inline", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, signingKeys: {keys: [{name: a.pem, pem: '-----BEGIN EC PRIVATE KEY-----'}], signWith: b.pem}}", "signingKeys.signWith"},
		{"signing with a key beside the generated one", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, signingKeys: {signWith: 2026-11.pem}}", "signingKeys.signWith"},
		{"sidecar-only network policy without its pod", "{mode: sidecar-only, identity: {anonymousOnly: true}}", "networkPolicy.podSelector"},
		{"sidecar-only network policy without ports", "{mode: sidecar-only, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: shop}}}", "networkPolicy.ports"},
		{"policies from a ConfigMap without its name", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: configMap}}", "policies.configMap.name"},
		{"both disruption budgets", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, podDisruptionBudget: {minAvailable: 1}}", "not both"},
		// A token the identity provider minted for another application
		// (payroll, with its roles there) would sign in.
		{"issuer without an audience", "{app: {image: {repository: x}}, identity: {issuerURLs: ['https://login.example.com']}}", "identity.audiences"},
		// Dev mode trusts a signing key on the pod's disk and listens on
		// loopback only: the pod would be unreachable, or anyone holding
		// the key would mint any identity.
		{"dev mode", "{app: {image: {repository: x}}, identity: {issuerURLs: ['https://login.example.com'], audiences: [shop]}, deputy: {dev: true}}", "deputy.dev"},
		// Values that may hold a secret are checked here, not by the
		// schema, whose errors quote them (TestRefusedValuesAreNotRepeated).
		{"redis address without a port", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, addrs: ['redis without port']}}", "redis.addrs[0] is not host:port"},
		{"bundle token over http", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: bundle, bundle: {url: 'http://bundles.example.com/b.tar.gz', tokenSecret: t, publicKey: k}}}", "policies.bundle.url is not https"},
		{"issuer not a URL", "{app: {image: {repository: x}}, identity: {issuerURLs: [login.example.com], anyAudience: true}}", "identity.issuerURLs[0] is not https"},
		{"issuer over plain http", "{app: {image: {repository: x}}, identity: {issuerURLs: ['http://login.example.com/realms/shop'], audiences: [shop]}}", "identity.issuerURLs[0] is not https"},
		// issuer_urls carry no namespace: two of them would make each
		// issuer's "cust1" one person.
		{"two issuer URLs", "{app: {image: {repository: x}}, identity: {issuerURLs: ['https://login.example.com', 'https://partner.example'], audiences: [shop]}}", "issuerURLs"},
	}
	c := loadChart(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(tc.values), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := render(t, c, f, true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %s", err, tc.want)
			}
		})
	}
}

// The alert rules and dashboard maintained beside the templates reach the
// cluster: rule files in either format are merged into one PrometheusRule,
// each dashboard becomes a ConfigMap the Grafana sidecar loads.
func TestMonitoringFilesRendered(t *testing.T) {
	c := loadChart(t)
	var kept []*chart.File
	for _, f := range c.Files {
		if !strings.HasPrefix(f.Name, "rules/") && !strings.HasPrefix(f.Name, "dashboards/") {
			kept = append(kept, f)
		}
	}
	fixtures := map[string]string{
		"rules/availability.yaml": "testdata/files/rules-file.yaml",
		"rules/decisions.yaml":    "testdata/files/rules-object.yaml",
		"dashboards/deputy.json":  "testdata/files/dashboard.json",
	}
	for name, path := range fixtures {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, &chart.File{Name: name, Data: b})
	}
	c.Files = kept

	out, err := render(t, c, "testdata/default.yaml", true)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, out)
	rule := m.get(t, "PrometheusRule", "shop-deputy").(*monitoringv1.PrometheusRule)
	var groups []string
	for _, g := range rule.Spec.Groups {
		groups = append(groups, g.Name)
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
	}
	if want := []string{"deputy.availability", "deputy.decisions"}; !slices.Equal(groups, want) {
		t.Errorf("groups %v, want %v", groups, want)
	}
	if r := rule.Spec.Groups[0].Rules[0]; r.Alert != "DeputyDown" || r.For == nil || string(*r.For) != "5m" {
		t.Errorf("alert %+v", r)
	}
	cm := m.get(t, "ConfigMap", "shop-deputy-dashboard-deputy").(*corev1.ConfigMap)
	want, _ := os.ReadFile(fixtures["dashboards/deputy.json"])
	if strings.TrimSpace(cm.Data["deputy.json"]) != strings.TrimSpace(string(want)) {
		t.Errorf("dashboard %q", cm.Data["deputy.json"])
	}
}

// The packaged chart carries the policies but not this test module.
func TestChartFiles(t *testing.T) {
	c := loadChart(t)
	var policies int
	for _, f := range c.Files {
		if strings.HasPrefix(f.Name, "tests/") {
			t.Errorf("test file %s packaged with the chart", f.Name)
		}
		if strings.HasPrefix(f.Name, "files/policies/") {
			policies++
		}
	}
	for _, tpl := range c.Templates {
		if strings.HasPrefix(tpl.Name, "tests/") {
			t.Errorf("test file %s packaged with the chart", tpl.Name)
		}
	}
	if policies == 0 {
		t.Error("no policies packaged: run `make chart-policies`")
	}
}

// Helm follows no symlink out of a chart (and warns on every command about
// those inside): the chart holds real files only.
func TestChartHasNoSymlinks(t *testing.T) {
	err := filepath.WalkDir(chartDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			t.Errorf("%s is a symlink", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The Go runtime's soft memory limit follows Deputy's container limit (90%
// of it), so the GC tightens before the kernel kills the container; a
// GOMEMLIMIT of the operator's own wins, and a limit the chart cannot read
// fails the render naming the setting.
func TestGoMemoryLimitFollowsContainerLimit(t *testing.T) {
	const none = "(none)"
	for _, tc := range []struct {
		name  string
		limit any    // deputy.resources.limits.memory; nil: the chart's
		env   []any  // deputy.extraEnv
		want  string // GOMEMLIMIT; empty: not set
		fails bool
	}{
		{name: "chart default", want: "483183820"},
		{name: "Gi", limit: "1Gi", want: "966367641"},
		{name: "decimal M", limit: "300M", want: "270000000"},
		{name: "bytes", limit: 100000000, want: "90000000"},
		{name: "no limit", limit: none, want: ""},
		{name: "operator's own", limit: "1Gi", env: []any{map[string]any{"name": "GOMEMLIMIT", "value": "700MiB"}}, want: "700MiB"},
		{name: "fraction refused", limit: "1.5Gi", fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deputy := map[string]any{}
			switch tc.limit {
			case nil:
			case none: // a null value removes the chart's default, as with --set ...=null
				deputy["resources"] = map[string]any{"limits": map[string]any{"memory": nil}}
			default:
				deputy["resources"] = map[string]any{"limits": map[string]any{"memory": tc.limit}}
			}
			if tc.env != nil {
				deputy["extraEnv"] = tc.env
			}
			vals, err := chartutil.ReadValuesFile(filepath.Join("testdata", "default.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			vals["deputy"] = deputy
			out, err := renderValues(loadChart(t), vals, false)
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), "deputy.resources.limits.memory") {
					t.Fatalf("render: %v, want an error naming deputy.resources.limits.memory", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pod := decode(t, out).get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
			var got []string
			for _, e := range container(t, pod, "deputy").Env {
				if e.Name == "GOMEMLIMIT" {
					got = append(got, e.Value)
				}
			}
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("GOMEMLIMIT %v, want none", got)
			case tc.want != "" && !slices.Equal(got, []string{tc.want}):
				t.Errorf("GOMEMLIMIT %v, want exactly [%s]", got, tc.want)
			}
		})
	}
}

// Keys fetched over plain http are chosen by whoever answers on the path,
// and so is every token Deputy accepts: the render refuses an issuer or
// JWKS URL over plain http (deputy.config keeps Deputy's own exception
// for loopback), even with the schema skipped (helm's
// --skip-schema-validation).
func TestRenderRefusesKeysInClear(t *testing.T) {
	const app = "app: {image: {repository: x}}, "
	tests := []struct {
		name, values, want string
	}{
		{"issuer URL", app + "identity: {issuerURLs: ['http://login.example.com'], audiences: [shop]}", "identity.issuerURLs[0] is not https"},
		{"issuer URL on loopback", app + "identity: {issuerURLs: ['http://127.0.0.1:8080'], audiences: [shop]}", "identity.issuerURLs[0] is not https"},
		{"config issuer URL", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuer_urls: ['http://10.1.2.3']}}}",
			"deputy.config.identity.issuer_urls[0] is plain http"},
		{"config issuer URL on a loopback look-alike", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuer_urls: ['http://127.0.0.1.example.com']}}}",
			"deputy.config.identity.issuer_urls[0] is plain http"},
		{"config JWKS URL", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuers: [{issuer: 'https://a.example.com', jwks_url: 'http://keys.internal/jwks.json'}]}}}",
			"deputy.config.identity.issuers[0].jwks_url is plain http"},
		{"config discovered issuer", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuers: [{issuer: 'https://a.example.com', jwks_file: /k.json, namespace: a}, {issuer: 'http://b.internal'}]}}}",
			"deputy.config.identity.issuers[1].issuer is plain http"},
		{"config loopback key proxy", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuers: [{issuer: 'https://a.example.com', jwks_url: 'http://127.0.0.1:8001/jwks.json'}]}}}", ""},
		{"config http issuer name with a key file", app + "identity: {audiences: [shop]}, deputy: {config: {identity: {issuers: [{issuer: 'http://a.internal', jwks_file: /k.json}]}}}", ""},
	}
	c := loadChart(t)
	c.Schema = nil
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderYAML(t, c, "{"+tc.values+"}")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// Deputy refuses an unverified Redis certificate outside dev mode, which
// the chart never runs: the render says so rather than the pod crashing.
// Plain Redis is allowed, and NOTES.txt says what crosses the network.
func TestRedisTLS(t *testing.T) {
	const base = "app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, addrs: ['r:6379']"
	c := loadChart(t)
	for _, tc := range []struct{ name, values, want string }{
		{"skip verify in config", base + ", tls: true}, deputy: {config: {redis: {tls_insecure_skip_verify: true}}}", "deputy.config.redis.tls_insecure_skip_verify is refused"},
		{"skip verify flag", base + ", tls: true}, deputy: {extraArgs: [--redis-tls-insecure-skip-verify]}", "--redis-tls-insecure-skip-verify is refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderYAML(t, c, "{"+tc.values+"}"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name, values string
		warn         bool
	}{
		{"plain redis", base + "}", true},
		{"redis over TLS", base + ", tls: true}", false},
		{"redis over TLS from config", base + "}, deputy: {config: {redis: {tls: true}}}", false},
		{"no redis", "app: {image: {repository: x}}, identity: {anonymousOnly: true}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := renderYAML(t, c, "{"+tc.values+"}")
			if err != nil {
				t.Fatal(err)
			}
			notes := out["deputy/templates/NOTES.txt"]
			if notes == "" {
				t.Fatalf("no NOTES.txt among %d files", len(out))
			}
			if got := strings.Contains(notes, "Redis is reached without TLS (redis.tls: false)"); got != tc.warn {
				t.Fatalf("NOTES.txt warns %v, want %v:\n%s", got, tc.warn, notes)
			}
		})
	}
}

// An issuer, or the anonymous-only switch, may come from any place Deputy
// reads it: the render refuses only a config that names none.
func TestIdentityFromEveryPlace(t *testing.T) {
	for name, values := range map[string]string{
		"issuer URL":              "identity: {issuerURLs: ['https://login.example.com'], audiences: [shop]}",
		"anonymous only":          "identity: {anonymousOnly: true}",
		"issuers in config":       "deputy: {config: {identity: {issuers: [{issuer: 'https://login.example.com', audiences: [shop]}]}}}",
		"issuer URLs in config":   "deputy: {config: {identity: {issuer_urls: ['https://login.example.com'], any_audience: true}}}",
		"anonymous only, config":  "deputy: {config: {identity: {anonymous_only: true}}}",
		"issuer URLs flag":        "deputy: {extraArgs: ['--identity-issuer-urls=https://login.example.com', --identity-any-audience]}",
		"anonymous only, env var": "deputy: {extraEnv: [{name: DEPUTY_IDENTITY_ANONYMOUS_ONLY, value: 'true'}]}",
	} {
		t.Run(name, func(t *testing.T) {
			renderInline(t, "app: {image: {repository: x}}\n"+values+"\n")
		})
	}
}
