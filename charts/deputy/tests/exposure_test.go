package tests

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"helm.sh/helm/v3/pkg/chart"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// notes renders the chart with inline values and returns NOTES.txt.
func notes(t *testing.T, values string) string {
	t.Helper()
	out, err := renderYAML(t, loadChart(t), values)
	if err != nil {
		t.Fatal(err)
	}
	n := out["deputy/templates/NOTES.txt"]
	if n == "" {
		t.Fatalf("no NOTES.txt among %d files", len(out))
	}
	return n
}

// The kubelet probes a pod's IP: a readiness probe on the application's
// port would have it listen there, where any pod of the cluster reaches it
// without Envoy and Deputy, forged x-deputy-* headers and all. Envoy asks
// the application on loopback (active health checking of its cluster) and
// answers the kubelet on a listener of its own that forwards nothing, so
// the application can listen on 127.0.0.1 alone; the pod declares no port
// for it.
func TestAppReadinessThroughEnvoy(t *testing.T) {
	m := mustRender(t, "testdata/default.yaml", true) // readinessPath: /health
	pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
	app := container(t, pod, "app")
	if len(app.Ports) != 0 {
		t.Errorf("application ports %+v declared: it listens on loopback, for Envoy", app.Ports)
	}
	p := app.ReadinessProbe
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("application readiness %+v, want an HTTP probe answered by Envoy", p)
	}
	if got := p.HTTPGet.Port.String(); got == "app" || got == "3000" {
		t.Fatalf("the kubelet probes the application's own port %s: it must listen on the pod IP", got)
	}

	cm := m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap)
	b, err := envoycheck.Bootstrap([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatalf("rendered Envoy config rejected: %v", err)
	}
	// The application's cluster: health checked on its loopback port, at
	// the readiness path.
	var appCluster *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "app" {
			appCluster = c
		}
	}
	addr := appCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr.GetAddress() != "127.0.0.1" || addr.GetPortValue() != 3000 {
		t.Errorf("application at %s:%d, want 127.0.0.1:3000", addr.GetAddress(), addr.GetPortValue())
	}
	hcs := appCluster.GetHealthChecks()
	if len(hcs) != 1 || hcs[0].GetHttpHealthCheck().GetPath() != "/health" {
		t.Fatalf("application health checks %v, want one HTTP check of /health", hcs)
	}

	// The listener the kubelet probes: Envoy's own answer from that
	// health check, and no route to any cluster.
	var probed *listenerv3.Listener
	for _, l := range b.GetStaticResources().GetListeners() {
		if fmt.Sprint(l.GetAddress().GetSocketAddress().GetPortValue()) == p.HTTPGet.Port.String() {
			probed = l
		}
	}
	if probed == nil {
		t.Fatalf("no Envoy listener on the probed port %s", p.HTTPGet.Port.String())
	}
	var hcm hcmv3.HttpConnectionManager
	if err := probed.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() != nil {
				t.Errorf("probe listener forwards %v to %s", r.GetMatch(), r.GetRoute().GetCluster())
			}
		}
	}
	var hc healthcheckv3.HealthCheck
	if f := hcm.GetHttpFilters()[0]; f.GetTypedConfig().UnmarshalTo(&hc) != nil {
		t.Fatalf("first filter of the probe listener is %s, want the health check", f.GetName())
	}
	if hc.GetPassThroughMode().GetValue() {
		t.Error("health check passes the probe through")
	}
	if got := hc.GetClusterMinHealthyPercentages()["app"].GetValue(); got != 100 {
		t.Errorf("health check needs %v%% of the application healthy, want 100", got)
	}
	if len(hc.GetHeaders()) != 1 || hc.GetHeaders()[0].GetName() != ":path" || hc.GetHeaders()[0].GetStringMatch().GetExact() != p.HTTPGet.Path {
		t.Errorf("health check answers %v, the kubelet asks for %s", hc.GetHeaders(), p.HTTPGet.Path)
	}

	// Without a readiness path nothing probes the application, and Envoy
	// opens no probe listener.
	m = renderInline(t, "{app: {image: {repository: x}}, identity: {anonymousOnly: true}}")
	if p := container(t, m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec, "app").ReadinessProbe; p != nil {
		t.Errorf("application probed without a readiness path: %+v", p)
	}
	b, err = envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.GetStaticResources().GetListeners()); n != 1 {
		t.Errorf("%d Envoy listeners without a readiness path, want the serving one alone", n)
	}
}

// Deputy's gRPC ext_authz port listens on loopback, where Envoy reaches it:
// its readiness is read from /readyz on the metrics port, which answers
// the same conditions. On the pod IP, any pod could ask Check for a request
// of its choosing wherever no NetworkPolicy is enforced. deputy.probes.grpc
// puts it back there, for the kubelet's gRPC probe.
func TestDeputyGRPCOnLoopback(t *testing.T) {
	tests := []struct {
		name, values string
		grpcProbe    bool
		grpcAddr     string
	}{
		{"default", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}}", false, "--grpc-addr=127.0.0.1:9191"},
		{"sidecar-only", "{mode: sidecar-only, singleReplica: true, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: storefront}, ports: [8080]}}", false, "--grpc-addr=127.0.0.1:9191"},
		{"gRPC probe", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, deputy: {probes: {grpc: true}}}", true, "--grpc-addr=:9191"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := renderInline(t, tc.values)
			var c corev1.Container
			if d, ok := m["Deployment"]["shop-deputy"]; ok {
				c = container(t, d.(*appsv1.Deployment).Spec.Template.Spec, "deputy")
			} else {
				strictYAML(t, m.get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap).Data["container.yaml"], &c)
			}
			if !slices.Contains(c.Args, tc.grpcAddr) {
				t.Errorf("args %v lack %s", c.Args, tc.grpcAddr)
			}
			declared := slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == 9191 })
			if declared != tc.grpcProbe {
				t.Errorf("gRPC port declared = %v, want %v: %+v", declared, tc.grpcProbe, c.Ports)
			}
			if got := c.ReadinessProbe.GRPC != nil; got != tc.grpcProbe {
				t.Errorf("gRPC readiness probe = %v, want %v", got, tc.grpcProbe)
			}
			if !tc.grpcProbe {
				if p := c.ReadinessProbe.HTTPGet; p == nil || p.Port.String() != "metrics" || !strings.HasPrefix(p.Path, "/readyz") {
					t.Errorf("readiness %+v, want /readyz on the metrics port", c.ReadinessProbe)
				}
			}
		})
	}
}

// The release notes tell where the application listens, and say loudly
// what stays open to every pod of the cluster when the chart renders no
// NetworkPolicy.
func TestNotesOnExposure(t *testing.T) {
	const app = "app: {image: {repository: x}, port: 3000}, identity: {anonymousOnly: true}"
	const sidecarOnly = "mode: sidecar-only, singleReplica: true, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: storefront}, ports: [8080]"
	tests := []struct {
		name, values string
		want         []string // in NOTES.txt
		absent       []string
	}{
		{"sidecar", "{" + app + "}", []string{"127.0.0.1:3000"}, []string{"NO NETWORKPOLICY"}},
		{"sidecar, gRPC probe", "{" + app + ", deputy: {probes: {grpc: true}}}", []string{"9191"}, []string{"NO NETWORKPOLICY"}},
		{"sidecar, policy off", "{" + app + ", networkPolicy: {enabled: false}}",
			[]string{"NO NETWORKPOLICY", "127.0.0.1:3000", "x-deputy-", "9090"}, []string{"9191"}},
		{"sidecar, policy off, gRPC probe", "{" + app + ", networkPolicy: {enabled: false}, deputy: {probes: {grpc: true}}}",
			[]string{"NO NETWORKPOLICY", "9191"}, nil},
		{"sidecar-only", "{" + sidecarOnly + "}}", nil, []string{"NO NETWORKPOLICY"}},
		{"sidecar-only, policy off", "{" + sidecarOnly + ", enabled: false}}", []string{"NO NETWORKPOLICY", "127.0.0.1", "x-deputy-"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := notes(t, tc.values)
			for _, w := range tc.want {
				if !strings.Contains(n, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, n)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(n, a) {
					t.Errorf("NOTES.txt says %q:\n%s", a, n)
				}
			}
		})
	}
}

// Envoy at debug or trace writes every request's headers to the pod log:
// bearer tokens, session cookies, x-deputy-token, redeem codes. The render
// refuses those levels unless envoy.allowCredentialLogging says so, through
// the schema and without it (helm's --skip-schema-validation); allowed,
// the release notes say what the log holds.
func TestEnvoyDebugLogNeedsConsent(t *testing.T) {
	const base = "app: {image: {repository: x}}, identity: {anonymousOnly: true}, envoy: {logLevel: "
	withSchema := loadChart(t)
	withoutSchema := loadChart(t)
	withoutSchema.Schema = nil
	for _, level := range []string{"debug", "trace"} {
		t.Run(level, func(t *testing.T) {
			for name, c := range map[string]*chart.Chart{"schema": withSchema, "no schema": withoutSchema} {
				_, err := renderYAML(t, c, "{"+base+level+"}}")
				if err == nil || !strings.Contains(err.Error(), "allowCredentialLogging") {
					t.Errorf("%s: err = %v, want a refusal naming envoy.allowCredentialLogging", name, err)
				}
			}
			if n := notes(t, "{"+base+level+", allowCredentialLogging: true}}"); !strings.Contains(n, "headers go to the\npod log in clear") {
				t.Errorf("NOTES.txt does not warn:\n%s", n)
			}
		})
	}
	if n := notes(t, "{"+base+"info}}"); strings.Contains(n, "in clear") {
		t.Errorf("NOTES.txt warns at info:\n%s", n)
	}
}

// Envoy's admin interface stops Envoy, fails its health checks and turns
// its logging to debug: it listens on a unix socket in a volume only the
// Envoy container mounts, not on the loopback the application's container
// shares. envoy.adminPort puts it on 127.0.0.1, and the notes say who
// reaches it there.
func TestEnvoyAdminOnlyForEnvoy(t *testing.T) {
	const values = "{app: {image: {repository: x}}, identity: {anonymousOnly: true}"
	m := renderInline(t, values+"}")
	b, err := envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	sock := b.GetAdmin().GetAddress().GetPipe().GetPath()
	if sock == "" {
		t.Fatalf("admin on %v, want a unix socket", b.GetAdmin().GetAddress())
	}
	pod := m.get(t, "Deployment", "shop-deputy").(*appsv1.Deployment).Spec.Template.Spec
	var vol string
	for _, vm := range container(t, pod, "envoy").VolumeMounts {
		if strings.HasPrefix(sock, vm.MountPath+"/") {
			vol = vm.Name
			if vm.ReadOnly {
				t.Errorf("%s mounted read-only: Envoy cannot create its socket", vm.MountPath)
			}
		}
	}
	if vol == "" {
		t.Fatalf("the admin socket %s is on no volume of Envoy's", sock)
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vol && v.EmptyDir != nil }) {
		t.Errorf("volume %s is not an emptyDir of the pod", vol)
	}
	for _, c := range pod.Containers {
		if c.Name != "envoy" && slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.Name == vol }) {
			t.Errorf("container %s mounts Envoy's admin socket", c.Name)
		}
	}

	m = renderInline(t, values+", envoy: {adminPort: 9901}}")
	b, err = envoycheck.Bootstrap([]byte(m.get(t, "ConfigMap", "shop-deputy-envoy").(*corev1.ConfigMap).Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 9901 {
		t.Errorf("admin on %v, want 127.0.0.1:9901", b.GetAdmin().GetAddress())
	}
	if n := notes(t, values+", envoy: {adminPort: 9901}}"); !strings.Contains(n, "127.0.0.1:9901") {
		t.Errorf("NOTES.txt does not say where admin listens:\n%s", n)
	}
}

// In sidecar-only mode the replicas are the workload's, which the chart
// cannot count: without Redis each would keep sessions, consents and
// grants of its own, and a consent withdrawn through one pod would not end
// a session another holds. The render needs Redis, or singleReplica saying
// there is one.
func TestSidecarOnlySharedState(t *testing.T) {
	const base = "mode: sidecar-only, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: shop}, ports: [8080]}"
	for _, tc := range []struct {
		name, values string
		ok           bool
	}{
		{"embedded store", "{" + base + "}", false},
		{"embedded store, one replica", "{" + base + ", singleReplica: true}", true},
		{"redis", "{" + base + ", redis: {enabled: true, addrs: ['redis:6379'], tls: true}}", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderYAML(t, loadChart(t), tc.values)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "singleReplica")):
				t.Fatalf("err = %v, want a refusal naming singleReplica", err)
			}
		})
	}
}
