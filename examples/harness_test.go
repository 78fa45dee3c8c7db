package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/porttest"
)

// deputyBin is built once by TestMain from this checkout.
var (
	deputyBin string
	buildErr  error
	repoRoot  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deputy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot, _ = filepath.Abs("..")
	// DEPUTY_BIN runs the tests against a binary built elsewhere (make
	// builds bin/deputy first); by default they build this checkout.
	if deputyBin = os.Getenv("DEPUTY_BIN"); deputyBin == "" {
		deputyBin = filepath.Join(dir, "deputy")
		cmd := exec.Command("go", "build", "-o", deputyBin, "./cmd/deputy")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/deputy: %v\n%s", err, out)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	return porttest.Free(t)
}

// process runs a command until the test ends, keeping its output for
// failure messages.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed when the process has exited
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, env []string, dir string, args ...string) *process {
	t.Helper()
	p := &process{name: name, out: &syncBuffer{}}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Dir = dir
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// waitHTTP polls url until it answers with want, for at most 30 s.
func waitHTTP(t *testing.T, p *process, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if p.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("%s not answering %d on %s (last error %v):\n%s", p.name, want, url, err, p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls cond until it holds, failing the test with failure()
// (read when the time is up) if it does not within d.
func eventually(t *testing.T, d time.Duration, cond func() bool, failure func() string) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(failure())
		}
	}
}

// deputy is a running `deputy serve --dev` with the shipped policies.
type deputy struct {
	http, grpc, metrics string
	devKey              string
	proc                *process
	checkProxy          string // --http-check-proxy: whose headers name the request
}

// stop ends Deputy and waits until it no longer answers.
func (d *deputy) stop(t *testing.T) {
	t.Helper()
	_ = d.proc.cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", d.http)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("deputy still answering after kill")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDeputy starts Deputy for the proxy named checkProxy (nginx, caddy).
func startDeputy(t *testing.T, checkProxy string) *deputy {
	t.Helper()
	// The shipped policies, decided through testdata/policies/e2e, which
	// adds denials with a body and headers of their own.
	return startDeputyWith(t, checkProxy, filepath.Join(repoRoot, "examples", "testdata", "policies"), "data.e2e.decision")
}

// policyDir writes rego, the module of package pkg, into a fresh
// directory for startDeputyWith, which loads it beside the shipped
// policies.
func policyDir(t *testing.T, pkg, rego string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, pkg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pkg, pkg+".rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDeputyWith starts Deputy with the shipped policies and those under
// policyDir, deciding with query.
func startDeputyWith(t *testing.T, checkProxy, policyDir, query string) *deputy {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	d := &deputy{devKey: filepath.Join(t.TempDir(), "dev-key.json"), checkProxy: checkProxy}
	// A free address is free when chosen, not when Deputy binds it: a
	// server of another package (or anything else on the machine) may
	// take it in between. Deputy then exits naming the address; it is
	// started again on others, a bounded number of times.
	for attempt := 1; ; attempt++ {
		d.http, d.grpc, d.metrics = freeAddr(t), freeAddr(t), freeAddr(t)
		p := start(t, "deputy", []string{"DEPUTY_IDENTITY_DEV_KEY_FILE=" + d.devKey}, repoRoot,
			deputyBin, "serve", "--dev",
			"--grpc-addr", d.grpc, "--http-addr", d.http, "--metrics-addr", d.metrics,
			"--http-check-proxy", checkProxy,
			"--policy-paths", filepath.Join(repoRoot, "policies")+","+policyDir,
			"--policy-decision-query", query)
		if attempt < 3 && exitedTakenAddr(p, "http://"+d.metrics+"/readyz") {
			t.Logf("deputy: an address was taken before it bound it; starting again (%s)", strings.TrimSpace(p.out.String()))
			continue
		}
		waitHTTP(t, p, "http://"+d.metrics+"/readyz", http.StatusOK)
		d.proc = p
		return d
	}
}

// exitedTakenAddr waits until p answers 200 on url or exits, for at most
// 30 s, and reports whether it exited because an address it was to listen
// on was in use.
func exitedTakenAddr(p *process, url string) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case <-p.exited:
			return strings.Contains(p.out.String(), "address already in use")
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return false
			}
		}
		select {
		case <-p.exited:
			return strings.Contains(p.out.String(), "address already in use")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// token mints a dev bearer token the running Deputy accepts.
func (d *deputy) token(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(deputyBin, append([]string{"dev", "token", "--key-file", d.devKey}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("deputy dev token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// direct asks Deputy's check endpoint the way its proxy does, for
// comparing what a proxy passed through with what Deputy answered.
func (d *deputy) direct(t *testing.T, method, uri string, h http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.http+"/deputy/authz", nil)
	for k, v := range h {
		req.Header[k] = v
	}
	if d.checkProxy == "nginx" {
		req.Header.Set("X-Original-Method", method)
		req.Header.Set("X-Original-URI", uri)
	} else {
		req.Header.Set("X-Forwarded-Method", method)
		req.Header.Set("X-Forwarded-Uri", uri)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// decisions is how many checks Deputy has decided, from its metrics.
func (d *deputy) decisions(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "deputy_decisions_total{") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		n += v
	}
	return n
}

// record is the part of a decision-log line the tests read.
type record struct {
	Path   string `json:"path"`
	Host   string `json:"host"`
	Result string `json:"result"`
	Reason string `json:"reason"`
}

// decisionFor waits (at most 10 s) for the decision on path in Deputy's
// stdout decision log, failing when none comes.
func (d *deputy) decisionFor(t *testing.T, path string) record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for line := range strings.Lines(d.proc.out.String()) {
			var r record
			if json.Unmarshal([]byte(line), &r) == nil && r.Path == path {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision logged for %s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seen is what the upstream application received.
type seen struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Headers http.Header `json:"headers"`
}

// appCacheControl is what the application says about caching its pages.
const appCacheControl = "public, max-age=60"

// upstream is the application behind the proxy: it echoes the request it
// received as JSON, and counts requests.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	hits int
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-upstream", "app")
		w.Header().Set("cache-control", appCacheControl)
		_ = json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.RequestURI(), Headers: r.Header})
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

// rewrite replaces each old string of a shipped config, failing when one
// is missing so the test never runs a config it did not mean to. The
// replacements are made in one pass over the config, never over what an
// earlier one wrote: Deputy's port written for 127.0.0.1:8181 may begin
// with 3000, and replacing 127.0.0.1:3000 after it sent Caddy to
// 127.0.0.1:<app port><rest of Deputy's port>.
func rewrite(t *testing.T, file string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s: %q not found", file, pairs[i])
		}
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

func startNginx(t *testing.T, d *deputy, app *upstream) string {
	t.Helper()
	return startNginxWith(t, d, app)
}

// startNginxWith starts nginx on the shipped config with the given
// directives added to its server block.
func startNginxWith(t *testing.T, d *deputy, app *upstream, directives ...string) string {
	t.Helper()
	return startNginxRewritten(t, d, app, directives)
}

// startNginxRewritten is startNginxWith with the given replacements (old,
// new pairs) made in the config besides the harness's own.
func startNginxRewritten(t *testing.T, d *deputy, app *upstream, directives []string, pairs ...string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx" // Debian installs it outside a user's PATH
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("nginx is not installed: apt-get install -y nginx")
		}
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	// Debian's nginx keeps temporary files under /var/lib/nginx: move them
	// into the test's directory so the test runs as any user.
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "\n    %s_temp_path %s;", kind, filepath.Join(dir, kind+"_temp"))
	}
	conf := rewrite(t, "nginx/nginx.conf", append([]string{
		"listen 8080;", "listen " + listen + ";" + strings.Join(directives, ""),
		"127.0.0.1:8181", d.http,
		"127.0.0.1:3000", app.addr(),
		"/var/log/nginx/access.log", filepath.Join(dir, "logs", "access.log"),
		"\nhttp {", "\nhttp {" + temps.String()}, pairs...)...)
	global := "daemon off; pid " + filepath.Join(dir, "nginx.pid") + ";"
	if os.Geteuid() == 0 {
		global += " user root;" // workers would otherwise switch to a user who cannot read the test's files
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile("nginx/deputy.js") // js_import reads it beside nginx.conf
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "deputy.js"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "nginx", nil, dir, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"),
		"-e", filepath.Join(dir, "error.log"),
		"-g", global)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("--- nginx error.log:\n%s", b)
		}
	})
	waitHTTP(t, p, "http://"+listen+"/deputy/authz", http.StatusNotFound)
	return "http://" + listen
}

func startCaddy(t *testing.T, d *deputy, app *upstream) string {
	t.Helper()
	return startCaddyWith(t, d, app)
}

// startCaddyWith starts Caddy on the shipped Caddyfile with the given
// replacements (old, new pairs) made in it besides the harness's own.
// Its site serves the listener's address as host only.
func startCaddyWith(t *testing.T, d *deputy, app *upstream, pairs ...string) string {
	t.Helper()
	base, _ := startCaddySite(t, d, app, false, pairs...)
	return base
}

// startCaddyAnyHost starts Caddy on the shipped Caddyfile with its site
// as shipped (http://:8080), serving a request whatever host it names,
// or none, on a loopback listener.
func startCaddyAnyHost(t *testing.T, d *deputy, app *upstream) string {
	t.Helper()
	base, _ := startCaddySite(t, d, app, true)
	return base
}

// startCaddySite starts Caddy and returns its base URL and its process,
// whose output holds every log Caddy writes (to stderr, as shipped).
func startCaddySite(t *testing.T, d *deputy, app *upstream, anyHost bool, pairs ...string) (string, *process) {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		t.Fatal("caddy is not installed: apt-get install -y caddy")
	}
	dir := t.TempDir()
	listen := freeAddr(t)
	site := "http://" + listen + " {"
	if anyHost {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			t.Fatal(err)
		}
		site = "http://:" + port + " {\n\tbind " + host
	}
	conf := rewrite(t, "caddy/Caddyfile", append([]string{
		"http://:8080 {", site,
		"localhost:2019", freeAddr(t),
		"127.0.0.1:8181", d.http,
		"127.0.0.1:3000", app.addr()}, pairs...)...)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	p := start(t, "caddy", env, dir, bin, "run", "--config", file, "--adapter", "caddyfile")
	waitHTTP(t, p, "http://"+listen+"/deputy/authz", http.StatusNotFound)
	return "http://" + listen, p
}

// call sends a request through the proxy without following redirects.
func call(t *testing.T, method, url string, h http.Header, body any) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("content-type", "application/json")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// callRaw sends a GET whose request target is written as given, which
// Go's client would not send (it cuts a "#" off as a fragment), and
// returns the response and its body.
func callRaw(t *testing.T, base, target string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	return callRawHost(t, base, strings.TrimPrefix(base, "http://"), target, h)
}

// callRawHost is callRaw with a Host header written as given, which Go's
// client would check first.
func callRawHost(t *testing.T, base, host, target string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, host)
	if err := h.Write(&req); err != nil {
		t.Fatal(err)
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decodeSeen(t *testing.T, resp *http.Response, body []byte) seen {
	t.Helper()
	if resp.Header.Get("x-upstream") != "app" {
		t.Fatalf("response did not come from the application: %d %s", resp.StatusCode, body)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("upstream echo: %v: %s", err, body)
	}
	return s
}
