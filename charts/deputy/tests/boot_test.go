package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/deputyhq/deputy/sidecar/porttest"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// The pod the chart renders starts Deputy: its ConfigMaps and Secrets are
// laid out as the kubelet would mount them, under a temporary root, and
// the container's own command line runs the real binary until its probes
// pass. This catches a config file the server refuses, a policy missing
// from the ConfigMap or a key file named but not mounted.
func TestRenderedPodStartsDeputy(t *testing.T) {
	bin := deputyBinary(t)
	redisAddr, _ := startRedis(t, "s3cret")
	// A Redis that hangs (SIGSTOP) from before the pod starts: Deputy
	// decides plain checks without it (DESIGN §6), so the probes must pass.
	frozenAddr, frozen := startRedis(t, "s3cret")
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = frozen.Signal(syscall.SIGCONT) })
	bundleURL, bundleKey := serveSignedBundle(t, bin)
	issuer := serveOIDCDiscovery(t)
	ownPolicies, ownItems := policiesConfigMap(t)
	tests := []struct {
		name   string
		values string            // a values file, or YAML values
		extra  *corev1.ConfigMap // an object the operator created, named in the values
	}{
		{"default", "testdata/default.yaml", nil},
		{"http-ext-authz", "testdata/http-ext-authz.yaml", nil},
		// Deputy checks at start that Envoy copies every name it sets
		// upstream (http.envoy_upstream_headers): the chart tells it so
		// for the names the values configure, whichever the transport.
		{"header names", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, envoy: {extAuthz: {transport: http}}, deputy: {config: {check: {owned_prefix: x-auth-, actor_token_header: x-actor-token}, partner: {on_behalf_of_header: x-customer}}}}", nil},
		{"header names over grpc", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, deputy: {config: {check: {owned_prefix: x-auth-}}}}", nil},
		// Readiness needs Redis reachable with the password from the Secret.
		{"redis", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, replicaCount: 2, redis: {enabled: true, addrs: ['" + redisAddr + "'], password: s3cret}, deputy: {config: {impersonation: {redeem_ttl: 20s}}}}", nil},
		{"redis frozen", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, replicaCount: 2, redis: {enabled: true, addrs: ['" + frozenAddr + "'], password: s3cret}}", nil},
		{"redis frozen, gRPC probes", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, redis: {enabled: true, addrs: ['" + frozenAddr + "'], password: s3cret}, deputy: {probes: {grpc: true}}}", nil},
		// The container an operator pastes into an existing pod, with the
		// signing keys from a Secret they created.
		{"sidecar-only", "testdata/sidecar-only.yaml", nil},
		// The first step of a rotation: the newer key published, the
		// other one signing.
		{"sidecar-only, signing with a later key", "{mode: sidecar-only, singleReplica: true, identity: {anonymousOnly: true}, networkPolicy: {podSelector: {app: storefront}, ports: [8080]}, " +
			"signingKeys: {existingSecret: deputy-signing-keys, existingSecretKeys: [current.pem, previous.pem], signWith: previous.pem}}", nil},
		// Policies from a bundle server, signed; readiness waits for the
		// first activation, of a bundle signed after minSignedAt.
		{"bundle", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: bundle, bundle: {url: '" + bundleURL + "', minSignedAt: '2026-01-01T00:00:00Z', publicKey: " + strconv.Quote(bundleKey) + "}}}", nil},
		// Policies from a ConfigMap the operator manages, packages mounted
		// back into their directories.
		{"policies-configmap", "{app: {image: {repository: x}}, identity: {anonymousOnly: true}, policies: {source: configMap, configMap: {name: shop-policies, items: " + ownItems + "}}}", ownPolicies},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := tc.values
			if !strings.HasSuffix(values, ".yaml") {
				values = filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(values, []byte(tc.values), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			m := mustRender(t, values, true)
			if tc.extra != nil {
				m["ConfigMap"][tc.extra.Name] = tc.extra
			}
			// The identity provider, moved to one served here: readiness
			// waits for its keys, found by discovery.
			d := startRendered(t, bin, m, "--identity-issuer-urls="+issuer, "--identity-audiences=storefront")
			httpAddr := d.http
			// Behind the pod's Envoy no forwarded check endpoint is served:
			// headers naming another request are nobody's to read.
			req, _ := http.NewRequest("GET", "http://"+httpAddr+"/deputy/authz", nil)
			req.Header.Set("X-Original-URI", "/catalog/shoes")
			req.Header.Set("X-Original-Method", "GET")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("forwarded check endpoint answered %d, want 404", resp.StatusCode)
			}
		})
	}
}

// renderedDeputy is Deputy started from a rendered pod: its listeners,
// moved to free loopback ports, and its output.
type renderedDeputy struct {
	grpc, http, metrics string
	out                 *strings.Builder
}

// startRendered runs bin as the container the manifests m describe runs
// it (its args, environment and mounts, under a temporary root), with
// args appended (the last flag wins), until each of its probes passes
// as the kubelet runs it. It stops Deputy when the test ends.
func startRendered(t *testing.T, bin string, m manifests, args ...string) *renderedDeputy {
	t.Helper()
	var c corev1.Container
	var vols []corev1.Volume
	if d, ok := m["Deployment"]["shop-deputy"]; ok {
		pod := d.(*appsv1.Deployment).Spec.Template.Spec
		c, vols = container(t, pod, "deputy"), pod.Volumes
	} else {
		cm := m.get(t, "ConfigMap", "shop-deputy-sidecar").(*corev1.ConfigMap)
		strictYAML(t, cm.Data["container.yaml"], &c)
		strictYAML(t, cm.Data["volumes.yaml"], &vols)
		m["Secret"] = map[string]any{"deputy-signing-keys": signingKeysSecret(t, "current.pem", "previous.pem")}
	}
	root := t.TempDir()
	mountVolumes(t, m, vols, c.VolumeMounts, root)

	d := &renderedDeputy{grpc: freeAddr(t), http: freeAddr(t), metrics: freeAddr(t), out: &strings.Builder{}}
	argv := make([]string, 0, len(c.Args)+3+len(args))
	for _, a := range c.Args {
		argv = append(argv, underRoot(a, root))
	}
	// The pod's ports, moved to free loopback ones.
	argv = append(argv, "--grpc-addr="+d.grpc, "--http-addr="+d.http, "--metrics-addr="+d.metrics)
	argv = append(argv, args...)
	cmd := exec.Command(bin, argv...)
	cmd.Dir = root
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s := m.get(t, "Secret", ref.Name).(*corev1.Secret)
			cmd.Env = append(cmd.Env, e.Name+"="+string(s.Data[ref.Key]))
		default:
			t.Fatalf("env %s: unexpected source", e.Name)
		}
	}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Closed when Deputy exits, so every waiter sees it.
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	// Each probe as the kubelet runs it, within its timeout.
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		switch {
		case p == nil:
		case p.GRPC != nil:
			if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
				return cp.Name == "grpc-authz" && cp.ContainerPort == p.GRPC.Port
			}) {
				t.Fatalf("gRPC probe on port %d, not the ext_authz port", p.GRPC.Port)
			}
			if err := pollGRPCHealth(d.grpc, probeTimeout(p), done); err != nil {
				t.Fatalf("gRPC health: %v\n%s", err, d.out.String())
			}
		case p.HTTPGet != nil:
			if p.HTTPGet.Port.String() != "metrics" {
				t.Fatalf("probe on port %s", p.HTTPGet.Port.String())
			}
			url := "http://" + d.metrics + p.HTTPGet.Path
			if err := poll(url, probeTimeout(p), done); err != nil {
				t.Fatalf("%s: %v\n%s", p.HTTPGet.Path, err, d.out.String())
			}
		}
	}
	return d
}

// signingKeysSecret is a Secret an operator made with fresh ECDSA keys.
func signingKeysSecret(t *testing.T, names ...string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{Data: map[string][]byte{}}
	for _, n := range names {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		s.Data[n] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	return s
}

// policiesConfigMap is the ConfigMap an operator would make of the shipped
// policies (keys cannot hold "/"), and the items that mount each key back
// at its path, as YAML flow.
func policiesConfigMap(t *testing.T) (*corev1.ConfigMap, string) {
	t.Helper()
	src := filepath.Join(chartDir, "..", "..", "policies")
	cm := &corev1.ConfigMap{Data: map[string]string{}}
	cm.Name = "shop-policies"
	var items []string
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.rego") || !(strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, ".json")) {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		key := strings.ReplaceAll(filepath.ToSlash(rel), "/", "__")
		cm.Data[key] = string(data)
		items = append(items, fmt.Sprintf("{key: %s, path: %s}", key, filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cm, "[" + strings.Join(items, ", ") + "]"
}

// serveOIDCDiscovery is an identity provider as Deputy sees one: an OIDC
// discovery document and the key set it names. It returns the issuer URL.
func serveOIDCDiscovery(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := pub.Bytes() // 0x04 || X || Y
	b64 := base64.RawURLEncoding.EncodeToString
	jwks := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"chart-test","alg":"ES256","use":"sig","x":%q,"y":%q}]}`,
		b64(point[1:33]), b64(point[33:]))
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, srv.URL, srv.URL+"/keys")
		case "/keys":
			fmt.Fprint(w, jwks)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// serveSignedBundle builds the shipped policies into a bundle signed with a
// fresh key, serves it, and returns its URL and the public key in PEM.
func serveSignedBundle(t *testing.T, bin string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "signing.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.tar.gz")
	cmd := exec.Command(bin, "bundle", "build", filepath.Join(chartDir, "..", "..", "policies"),
		"-o", bundle, "--revision", "chart-test", "--key", priv)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deputy bundle build: %v\n%s", err, out)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, bundle)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/deputy/bundle.tar.gz", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
}

// startRedis runs a real redis-server with a password on a free port.
func startRedis(t *testing.T, password string) (string, *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: apt-get install -y redis-server")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--requirepass", password,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, cmd.Process
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not listening on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountVolumes writes what each mount would show in the container.
func mountVolumes(t *testing.T, m manifests, vols []corev1.Volume, mounts []corev1.VolumeMount, root string) {
	t.Helper()
	byName := map[string]corev1.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	for _, vm := range mounts {
		v := byName[vm.Name]
		files := map[string]string{} // path in the volume → content
		switch {
		case v.ConfigMap != nil:
			cm := m.get(t, "ConfigMap", v.ConfigMap.Name).(*corev1.ConfigMap)
			project(files, cm.Data, v.ConfigMap.Items)
		case v.Secret != nil:
			s := m.get(t, "Secret", v.Secret.SecretName).(*corev1.Secret)
			data := map[string]string{}
			for k, b := range s.Data {
				data[k] = string(b)
			}
			project(files, data, v.Secret.Items)
		case v.EmptyDir != nil:
		default:
			t.Fatalf("volume %s: unexpected source", v.Name)
		}
		dst := filepath.Join(root, vm.MountPath)
		if vm.SubPath != "" {
			files = map[string]string{"": files[vm.SubPath]}
		}
		if err := os.MkdirAll(dst, 0o755); err != nil && vm.SubPath == "" {
			t.Fatal(err)
		}
		for p, content := range files {
			f := filepath.Join(dst, p)
			if vm.SubPath != "" {
				f = dst
				_ = os.Remove(dst)
			}
			content = underRoot(content, root)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// underRoot moves the pod's paths Deputy reads and writes (its config,
// keys and policies, its spool) under root, where mountVolumes put them.
func underRoot(s, root string) string {
	for _, dir := range []string{"/etc/deputy/", "/var/lib/deputy/"} {
		s = strings.ReplaceAll(s, dir, root+dir)
	}
	return s
}

func project(files, data map[string]string, items []corev1.KeyToPath) {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
		return
	}
	for _, it := range items {
		files[it.Path] = data[it.Key]
	}
}

func poll(url string, timeout time.Duration, exited <-chan struct{}) error {
	client := &http.Client{Timeout: timeout}
	return pollUntil(exited, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// pollGRPCHealth waits for the gRPC health service to answer SERVING
// within timeout, as the kubelet's grpc probe asks it.
func pollGRPCHealth(addr string, timeout time.Duration, exited <-chan struct{}) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	return pollUntil(exited, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", r.GetStatus())
		}
		return nil
	})
}

// pollUntil calls try until it succeeds, Deputy exits or 30 s pass.
func pollUntil(exited <-chan struct{}, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		last := try(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("deputy exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probeTimeout is how long the kubelet waits for a probe's answer: its
// timeoutSeconds, 1 s when unset.
func probeTimeout(p *corev1.Probe) time.Duration {
	if p.TimeoutSeconds > 0 {
		return time.Duration(p.TimeoutSeconds) * time.Second
	}
	return time.Second
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return porttest.Free(t)
}

// deputyBinary builds the server from the repository (its own module), or
// takes DEPUTY_BIN when the caller built it already.
func deputyBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("DEPUTY_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "deputy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/deputy")
	cmd.Dir = filepath.Join(chartDir, "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/deputy: %v\n%s", err, out)
	}
	return bin
}
