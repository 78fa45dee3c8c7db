package tests

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func renderInline(t *testing.T, values string) manifests {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return mustRender(t, f, true)
}

// A Redis TLS CA, or anything else Deputy must read, mounts without
// forking the chart; extra flags and env reach the container.
func TestExtraVolumesEnvArgs(t *testing.T) {
	values := `app: {image: {repository: x}}
identity: {anonymousOnly: true}
deputy:
  extraArgs: [--redis-tls-ca=/etc/deputy/redis-ca/ca.crt]
  extraEnv: [{name: DEPUTY_LOG_LEVEL, value: debug}]
  extraVolumes: [{name: redis-ca, secret: {secretName: redis-ca}}]
  extraVolumeMounts: [{name: redis-ca, mountPath: /etc/deputy/redis-ca, readOnly: true}]
`
	check := func(t *testing.T, c corev1.Container, vols []corev1.Volume) {
		t.Helper()
		if !slices.Contains(c.Args, "--redis-tls-ca=/etc/deputy/redis-ca/ca.crt") {
			t.Errorf("args %v", c.Args)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "DEPUTY_LOG_LEVEL" && e.Value == "debug" }) {
			t.Errorf("env %v", c.Env)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == "redis-ca" && m.MountPath == "/etc/deputy/redis-ca" && m.ReadOnly
		}) {
			t.Errorf("mounts %v", c.VolumeMounts)
		}
		if !slices.ContainsFunc(vols, func(v corev1.Volume) bool {
			return v.Name == "redis-ca" && v.Secret != nil && v.Secret.SecretName == "redis-ca"
		}) {
			t.Errorf("volumes %v", vols)
		}
	}
	t.Run("sidecar", func(t *testing.T) {
		m := renderInline(t, values)
		pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
		check(t, container(t, pod, "deputy"), pod.Volumes)
	})
	t.Run("sidecar-only", func(t *testing.T) {
		m := renderInline(t, values+"mode: sidecar-only\nsingleReplica: true\nnetworkPolicy: {podSelector: {app: shop}, ports: [8080]}\n")
		cm := m.get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap)
		var c corev1.Container
		var vols []corev1.Volume
		strictYAML(t, cm.Data["container.yaml"], &c)
		strictYAML(t, cm.Data["volumes.yaml"], &vols)
		check(t, c, vols)
	})
}

func TestServiceMonitorSettings(t *testing.T) {
	m := renderInline(t, `app: {image: {repository: x}}
identity: {anonymousOnly: true}
monitoring:
  serviceMonitor:
    scrapeTimeout: 10s
    namespace: monitoring
    relabelings: [{action: replace, targetLabel: team, replacement: storefront}]
    metricRelabelings: [{action: drop, sourceLabels: [__name__], regex: go_gc_.*}]
`)
	sm := m.get(t, "ServiceMonitor", "shop-deputy").(*monitoringv1.ServiceMonitor)
	if sm.Namespace != "monitoring" || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"storefront"}) {
		t.Errorf("namespace %q selector %v: a ServiceMonitor elsewhere must still select the release namespace", sm.Namespace, sm.Spec.NamespaceSelector)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.ScrapeTimeout != "10s" || len(ep.RelabelConfigs) != 1 || len(ep.MetricRelabelConfigs) != 1 {
		t.Errorf("endpoint %+v", ep)
	}
	if ep.RelabelConfigs[0].TargetLabel != "team" {
		t.Errorf("relabeling %+v", ep.RelabelConfigs[0])
	}
}

func TestDisruptionBudget(t *testing.T) {
	cases := []struct {
		name, values string
		max, min     *intstr.IntOrString
	}{
		{"default", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}}", ptr(intstr.FromInt32(1)), nil},
		{"minAvailable", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, podDisruptionBudget: {maxUnavailable: null, minAvailable: '50%'}}", nil, ptr(intstr.FromString("50%"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pdb := renderInline(t, tc.values).get(t, "PodDisruptionBudget", "shop-deputy").(*policyv1.PodDisruptionBudget)
			if !equalIntOrString(pdb.Spec.MaxUnavailable, tc.max) || !equalIntOrString(pdb.Spec.MinAvailable, tc.min) {
				t.Fatalf("max %v min %v, want %v %v", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable, tc.max, tc.min)
			}
		})
	}
}

// In every mode a NetworkPolicy admits the serving port and metrics, and
// never Deputy's gRPC port, which listens on the pod IP for the kubelet's
// gRPC probe (deputy.probes.grpc).
func TestNetworkPolicyEveryMode(t *testing.T) {
	cases := []struct {
		name, values string
		selector     map[string]string
		ports        []string
	}{
		{"sidecar", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}}",
			map[string]string{"app.kubernetes.io/name": "deputy", "app.kubernetes.io/instance": "shop"}, []string{"http", "metrics"}},
		{"sidecar-only", "{mode: sidecar-only, singleReplica: true, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: storefront}, ports: [8080]}}",
			map[string]string{"app": "storefront"}, []string{"8080", "9090"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			np := renderInline(t, tc.values).get(t, "NetworkPolicy", "shop-deputy").(*networkingv1.NetworkPolicy)
			for k, v := range tc.selector {
				if np.Spec.PodSelector.MatchLabels[k] != v {
					t.Errorf("selector %v, want %v", np.Spec.PodSelector.MatchLabels, tc.selector)
				}
			}
			var ports []string
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					ports = append(ports, p.Port.String())
				}
			}
			if !slices.Equal(ports, tc.ports) {
				t.Errorf("admits %v, want %v", ports, tc.ports)
			}
			if slices.Contains(ports, "9191") || slices.Contains(ports, "grpc-authz") {
				t.Error("the gRPC ext_authz port is open to other pods")
			}
		})
	}
}

// /metrics and /readyz are not for every pod of the cluster: by default
// only the monitoring namespace's (where Prometheus runs) reach them, and
// an empty metricsFrom opens them to all on purpose.
func TestNetworkPolicyMetricsPeers(t *testing.T) {
	metricsRule := func(t *testing.T, values string) networkingv1.NetworkPolicyIngressRule {
		t.Helper()
		np := renderInline(t, values).get(t, "NetworkPolicy", "shop-deputy").(*networkingv1.NetworkPolicy)
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) == 1 && r.Ports[0].Port.String() == "metrics" {
				return r
			}
		}
		t.Fatalf("no metrics rule in %+v", np.Spec.Ingress)
		return networkingv1.NetworkPolicyIngressRule{}
	}
	t.Run("default", func(t *testing.T) {
		r := metricsRule(t, "{app: {image: {repository: x}}, identity: {anonymousOnly: true}}")
		if len(r.From) != 1 || r.From[0].NamespaceSelector == nil || r.From[0].PodSelector != nil ||
			r.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
			t.Errorf("metrics admitted from %+v, want the monitoring namespace only", r.From)
		}
	})
	t.Run("everyone on purpose", func(t *testing.T) {
		if r := metricsRule(t, "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, networkPolicy: {metricsFrom: []}}"); len(r.From) != 0 {
			t.Errorf("metrics admitted from %+v, want everyone", r.From)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func equalIntOrString(a, b *intstr.IntOrString) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.String() == b.String()
}

// Policies from an operator's ConfigMap: mounted where Deputy reads, and
// watched, since the kubelet updates the mount in place.
func TestPoliciesFromConfigMap(t *testing.T) {
	m := renderInline(t, "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: configMap, configMap: {name: shop-rules}}}")
	if _, ok := m["ConfigMap"]["shop-deputy-policies"]; ok {
		t.Error("the chart's own policies rendered next to the operator's")
	}
	raw := m.get(t, "ConfigMap", "shop-deputy-config").(*corev1.ConfigMap).Data["config.yaml"]
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	if w, _ := lookup(cfg, "policy.watch"); w != true {
		t.Errorf("policy.watch = %v\n%s", w, raw)
	}
	pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Name == "deputy-policies" && v.ConfigMap != nil && v.ConfigMap.Name == "shop-rules"
	}) {
		t.Errorf("volumes %v", pod.Volumes)
	}
	if !slices.ContainsFunc(container(t, pod, "deputy").VolumeMounts, func(vm corev1.VolumeMount) bool {
		return vm.Name == "deputy-policies" && vm.MountPath == "/etc/deputy/policies"
	}) {
		t.Error("policies not mounted at /etc/deputy/policies")
	}
}
