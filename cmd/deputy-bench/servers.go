package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar/porttest"
)

// server is one process under test.
type server struct {
	name       string
	grpc, http string
	pprof      string // Go's profiles, when asked for
	cmd        *exec.Cmd
	log        string
}

// procs starts the processes of a run and stops every one of them.
type procs struct {
	dir  string
	list []*server
	rcs  []*goredis.Client
}

// startAt runs bin with args and waits until it listens on grpcAddr.
func (p *procs) startAt(name, grpcAddr, bin string, args ...string) (*server, error) {
	s := &server{name: name, grpc: grpcAddr, log: filepath.Join(p.dir, name+".log")}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	// Decision logs on stdout go to /dev/null: a pipe would make this
	// process pay for reading them.
	cmd.Stdout, cmd.Stderr = nil, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.cmd = cmd
	p.list = append(p.list, s)
	if err := waitTCP(grpcAddr); err != nil {
		raw, _ := os.ReadFile(s.log)
		return nil, fmt.Errorf("%s did not start: %v\n%s", name, err, raw)
	}
	return s, nil
}

// start runs bin with args, the last of which is the address it listens on.
func (p *procs) start(name, bin string, args ...string) (*server, error) {
	return p.startAt(name, args[len(args)-1], bin, args...)
}

func (p *procs) stopAll() {
	for _, c := range p.rcs {
		c.Close()
	}
	for i := len(p.list) - 1; i >= 0; i-- {
		p.list[i].stop()
	}
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _, _ = s.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// deputy starts `deputy serve` in dev mode on loopback ports.
func (p *procs) deputy(o options, name string, extra ...string) (*server, error) {
	g, h := freeAddr(), freeAddr()
	args := append([]string{"serve", "--dev", "--grpc-addr", g, "--http-addr", h, "--metrics-addr", freeAddr(),
		"--identity-dev-key-file", filepath.Join(p.dir, "dev-key.json"), "--log-level", "warn"}, extra...)
	var pp string
	if o.profile != "" {
		pp = freeAddr()
		args = append(args, "--pprof-addr", pp)
	}
	s, err := p.startAt(name, g, o.deputy, args...)
	if err != nil {
		return nil, err
	}
	s.http, s.pprof = h, pp
	return s, nil
}

// opaEnvoy starts OPA-Envoy on the policy in pdir, every listener on
// loopback: its ext_authz gRPC server and OPA's REST API (the diagnostic
// listener is off unless asked for). Decision logs are off, its default.
func (p *procs) opaEnvoy(o options, name, pdir, path string) (*server, error) {
	g := freeAddr()
	cfg := filepath.Join(p.dir, name+".yaml")
	conf := fmt.Sprintf("plugins:\n  envoy_ext_authz_grpc:\n    addr: %s\n    path: %s\n", g, path)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return p.startAt(name, g, o.opaEnvoy, "run", "--server", "--addr", freeAddr(), "--skip-version-check",
		"--log-level", "error", "--config-file", cfg, filepath.Join(pdir, "policy.rego"))
}

// redisCounter reads how many commands a Redis server has served.
type redisCounter struct {
	addr string
	c    *goredis.Client
}

func (p *procs) redis(bin string) (*redisCounter, error) {
	addr := freeAddr()
	host, port, _ := net.SplitHostPort(addr)
	if _, err := p.startAt("redis", addr, bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no"); err != nil {
		return nil, err
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	p.rcs = append(p.rcs, c)
	return &redisCounter{addr: addr, c: c}, nil
}

// calls sums the calls of every command Redis has served.
func (r *redisCounter) calls() (int64, error) {
	info, err := r.c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		if i := strings.Index(line, "calls="); i >= 0 {
			rest := line[i+len("calls="):]
			if j := strings.IndexByte(rest, ','); j >= 0 {
				rest = rest[:j]
			}
			var n int64
			_, _ = fmt.Sscan(rest, &n)
			total += n
		}
	}
	return total, nil
}

// token mints a dev token for the running Deputy's dev issuer.
func (d *server) token(bin, dir string, args ...string) (string, error) {
	out, err := exec.Command(bin, append([]string{"dev", "token", "--key-file", filepath.Join(dir, "dev-key.json")}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// call makes one management API call and decodes the answer into out.
func (d *server) call(method, path, tok, body string, out any) error {
	req, _ := http.NewRequest(method, "http://"+d.http+"/deputy/v1"+path, strings.NewReader(body))
	req.Header.Set("authorization", "Bearer "+tok)
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// partner has partner user pat ask customer acme for update access, has
// acme's contact manager approve it, and returns pat's token.
func (d *server) partner(bin, dir string) (string, error) {
	pat, err := d.token(bin, dir, "--sub", "pat", "--org", "partnerco")
	if err != nil {
		return "", err
	}
	cora, err := d.token(bin, dir, "--sub", "cora", "--org", "acme", "--roles", "contact_manager")
	if err != nil {
		return "", err
	}
	var req struct {
		ID string `json:"id"`
	}
	if err := d.call("POST", "/partner/requests", pat,
		`{"customer":"acme","contact_email":"cora@acme.example","expiry_days":30,"level":"update","scope":"organisation"}`, &req); err != nil {
		return "", err
	}
	if err := d.call("POST", "/partner/requests/"+req.ID+"/approve", cora, "", nil); err != nil {
		return "", err
	}
	return pat, nil
}

// reseller assigns customer acme to a reseller domain and returns the
// token of a reseller admin signed in through it.
func (d *server) reseller(bin, dir string) (string, error) {
	super, err := d.token(bin, dir, "--sub", "sam", "--domain", "shop-a.example", "--roles", "reseller_super_admin")
	if err != nil {
		return "", err
	}
	if err := d.call("PUT", "/reseller/assignments/acme", super, `{}`, nil); err != nil {
		return "", err
	}
	return d.token(bin, dir, "--sub", "rita", "--domain", "shop-a.example", "--roles", "reseller_admin")
}

// impersonate walks Login as Customer through the API and returns the
// session cookie value.
func (d *server) impersonate(bin, dir string) (string, error) {
	staff, err := d.token(bin, dir, "--sub", "staff-1", "--name", "Sam Staff", "--roles", "support_lead")
	if err != nil {
		return "", err
	}
	customer, err := d.token(bin, dir, "--sub", "cust-9", "--name", "Zoë Customer", "--roles", "customer")
	if err != nil {
		return "", err
	}
	sync, err := d.token(bin, dir, "--sub", "shop", "--roles", "customer_sync")
	if err != nil {
		return "", err
	}
	if err := d.call("PUT", "/customers/cust-9", sync, `{"name":"Zoë Customer","default_store_view":"en"}`, nil); err != nil {
		return "", err
	}
	if err := d.call("PUT", "/customers/cust-9/consent", customer, `{"allowed":true}`, nil); err != nil {
		return "", err
	}
	var started struct {
		RedeemURL string `json:"redeem_url"`
	}
	if err := d.call("POST", "/impersonation/sessions", staff, `{"customer_id":"cust-9","reason":"load test"}`, &started); err != nil {
		return "", err
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// Used on the storefront host the load's checks name: a session is
	// honoured only on the host its link was redeemed on.
	req, err := http.NewRequest("GET", "http://"+d.http+started.RedeemURL, nil)
	if err != nil {
		return "", err
	}
	req.Host = "shop.example.com"
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "deputy_session" {
			return c.Value, nil
		}
	}
	return "", fmt.Errorf("redeem set no session cookie (status %d)", resp.StatusCode)
}

// freeAddr is a loopback address for a server this run starts, never one
// it handed out before (porttest.Pick): port 0 once gave one Deputy its
// gRPC and metrics listeners on the same port.
func freeAddr() string {
	addr, err := porttest.Pick()
	if err != nil {
		panic(err) // no loopback port binds: nothing here can run
	}
	return addr
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not open", addr)
}

// cpuProfile starts fetching a CPU profile of the server at addr over the
// coming run (its length less a second, so the profile ends inside it) and
// returns a function that waits for it and writes it to file.
func cpuProfile(addr, file string, run time.Duration) func() error {
	secs := max(1, int(run.Seconds())-1)
	done := make(chan error, 1)
	go func() {
		done <- fetchProfile(addr, fmt.Sprintf("profile?seconds=%d", secs), file, time.Duration(secs)*time.Second+30*time.Second)
	}()
	return func() error { return <-done }
}

// fetchProfile writes the profile that the server at addr serves under
// /debug/pprof/<which> to file.
func fetchProfile(addr, which, file string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/%s", addr, which))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, raw, 0o644)
}

// profileName is a scenario's name as a file name.
func profileName(scenario string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(scenario) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-") + ".pprof"
}
