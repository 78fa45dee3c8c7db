// Command deputy-bench is the load test of `make bench`: it starts a
// do-nothing ext_authz server and `deputy serve` on loopback, drives each
// with ghz at the same concurrency, and prints throughput, p50/p99 and the
// ratio to the do-nothing server, measured in the same run. With Redis it
// also reports Redis round trips per impersonated check at steady state.
// Every scenario's request is checked to be allowed before its run.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

type options struct {
	deputy, noop, ghz, redisServer string
	concurrency                    int
	duration                       time.Duration
	connections                    int
}

func main() {
	var o options
	flag.StringVar(&o.deputy, "deputy", "bin/deputy", "deputy binary")
	flag.StringVar(&o.noop, "noop", "bin/noop-authz", "do-nothing ext_authz binary")
	flag.StringVar(&o.ghz, "ghz", "ghz", "ghz binary")
	flag.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary (empty: skip the Redis scenarios)")
	flag.IntVar(&o.concurrency, "c", 16, "concurrent streams")
	flag.IntVar(&o.connections, "connections", 4, "gRPC connections")
	flag.DurationVar(&o.duration, "z", 8*time.Second, "duration of each run")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "deputy-bench:", err)
		os.Exit(1)
	}
}

// result is what one ghz run measured.
type result struct {
	name          string
	rps           float64
	p50, p99      time.Duration
	count         int
	errors        int
	errorCodes    []string
	roundTrips    float64 // Redis commands per check, when measured
	hasRoundTrips bool
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "deputy-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}()
	start := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+strconv.Itoa(len(procs))+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = io.Discard, logf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return nil
	}

	public := writePayload(dir, "public.json", nil)
	var results []result

	// Baseline: the do-nothing server.
	noopAddr := freeAddr()
	if err := start(o.noop, "-addr", noopAddr); err != nil {
		return err
	}
	if err := waitTCP(noopAddr); err != nil {
		return err
	}
	r, err := ghz(o, "do-nothing ext_authz", noopAddr, public)
	if err != nil {
		return err
	}
	results = append(results, r)
	baseline := r.rps

	// Deputy on the embedded store, decision log off then on (stdout).
	for _, sink := range []string{"none", "stdout"} {
		d, err := startDeputy(start, o, dir, "--decision-log-sink", sink)
		if err != nil {
			return err
		}
		r, err := ghz(o, "deputy public route, decision log "+sink, d.grpc, public)
		if err != nil {
			return err
		}
		results = append(results, r)
		if sink == "stdout" {
			cookie, err := d.impersonate(o.deputy, dir)
			if err != nil {
				return err
			}
			imp := writePayload(dir, "imp.json", map[string]string{"cookie": "deputy_session=" + cookie}, "/customer/account")
			r, err := ghz(o, "deputy impersonation, embedded store", d.grpc, imp)
			if err != nil {
				return err
			}
			results = append(results, r)

			// Partner and reseller users acting for a customer.
			pat, err := d.partner(o.deputy, dir)
			if err != nil {
				return err
			}
			partner := writePayload(dir, "partner.json", map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": "acme"},
				"/customers/acme/service-requests/42")
			if r, err = ghz(o, "deputy partner, embedded store", d.grpc, partner); err != nil {
				return err
			}
			results = append(results, r)
			rita, err := d.reseller(o.deputy, dir)
			if err != nil {
				return err
			}
			reseller := writePayload(dir, "reseller.json", map[string]string{"authorization": "Bearer " + rita, "x-on-behalf-of": "acme"},
				"/support/cases")
			if r, err = ghz(o, "deputy reseller, embedded store", d.grpc, reseller); err != nil {
				return err
			}
			results = append(results, r)
		}
		d.stop()
	}

	// Deputy on Redis: impersonation, and Redis round trips per check.
	if o.redisServer != "" {
		redisAddr := freeAddr()
		host, port, _ := net.SplitHostPort(redisAddr)
		if err := start(o.redisServer, "--bind", host, "--port", port, "--save", "", "--appendonly", "no"); err != nil {
			return err
		}
		if err := waitTCP(redisAddr); err != nil {
			return err
		}
		rc := goredis.NewClient(&goredis.Options{Addr: redisAddr})
		defer rc.Close()
		for _, sink := range []string{"none", "redis"} {
			d, err := startDeputy(start, o, dir, "--redis-addrs", redisAddr, "--decision-log-sink", sink)
			if err != nil {
				return err
			}
			cookie, err := d.impersonate(o.deputy, dir)
			if err != nil {
				return err
			}
			imp := writePayload(dir, "imp-redis.json", map[string]string{"cookie": "deputy_session=" + cookie}, "/customer/account")
			before, err := commandCalls(rc)
			if err != nil {
				return err
			}
			r, err := ghz(o, "deputy impersonation, Redis, decision log "+sink, d.grpc, imp)
			if err != nil {
				return err
			}
			after, err := commandCalls(rc)
			if err != nil {
				return err
			}
			if sink == "none" && r.count > 0 {
				// Two commands are the INFO calls themselves.
				r.roundTrips, r.hasRoundTrips = float64(after-before-1)/float64(r.count), true
			}
			results = append(results, r)
			d.stop()
		}
	}

	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\nLoad over loopback: ghz, %d streams on %d connections, %s per run\n\n", o.concurrency, o.connections, o.duration)
	fmt.Fprintln(w, "scenario\tchecks/s\tp50\tp99\tvs do-nothing\terrors\tRedis trips/check")
	for _, r := range results {
		trips := "-"
		if r.hasRoundTrips {
			trips = fmt.Sprintf("%.4f", r.roundTrips)
		}
		errs := strconv.Itoa(r.errors)
		if len(r.errorCodes) > 0 {
			sort.Strings(r.errorCodes)
			errs += " (" + strings.Join(r.errorCodes, " ") + ")"
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%.0f%%\t%s\t%s\n", r.name, r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), 100*r.rps/baseline, errs, trips)
	}
	return w.Flush()
}

type deputy struct {
	grpc, http string
	cmd        *exec.Cmd
}

func (d *deputy) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _, _ = d.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
	}
}

func startDeputy(start func(string, ...string) error, o options, dir string, extra ...string) (*deputy, error) {
	d := &deputy{grpc: freeAddr(), http: freeAddr()}
	args := append([]string{"serve", "--dev", "--grpc-addr", d.grpc, "--http-addr", d.http, "--metrics-addr", freeAddr(),
		"--grpc-reflection", "--identity-dev-key-file", filepath.Join(dir, "dev-key.json"), "--log-level", "warn"}, extra...)
	cmd := exec.Command(o.deputy, args...)
	logf, err := os.Create(filepath.Join(dir, "deputy.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = io.Discard, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.cmd = cmd
	if err := waitTCP(d.grpc); err != nil {
		raw, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("deputy did not start: %v\n%s", err, raw)
	}
	return d, nil
}

// token mints a dev token for the running Deputy's dev issuer.
func (d *deputy) token(bin, dir string, args ...string) (string, error) {
	out, err := exec.Command(bin, append([]string{"dev", "token", "--key-file", filepath.Join(dir, "dev-key.json")}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// call makes one management API call and decodes the answer into out.
func (d *deputy) call(method, path, tok, body string, out any) error {
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
func (d *deputy) partner(bin, dir string) (string, error) {
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
func (d *deputy) reseller(bin, dir string) (string, error) {
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
func (d *deputy) impersonate(bin, dir string) (string, error) {
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
	resp, err := client.Get("http://" + d.http + started.RedeemURL)
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

// writePayload writes a CheckRequest as a browser page view with 15
// headers, plus extra ones.
func writePayload(dir, name string, extra map[string]string, path ...string) string {
	p := "/catalog/shoes?size=42&color=red"
	if len(path) > 0 {
		p = path[0]
	}
	headers := map[string]string{
		":authority": "shop.example.com", ":method": "GET", ":path": p, ":scheme": "https",
		"accept": "text/html,application/xhtml+xml", "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
		"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https",
		"x-request-id": "8f4c1e2a-6b1d-4c3e-9a57-3f0e2d1c4b5a", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"sec-fetch-mode": "navigate", "x-envoy-expected-rq-timeout-ms": "15000", "cookie": "cart=abc123",
	}
	for k, v := range extra {
		headers[k] = v
	}
	req := map[string]any{"attributes": map[string]any{
		"source":  map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.3.17", "portValue": 51234}}},
		"request": map[string]any{"http": map[string]any{"method": "GET", "path": p, "host": "shop.example.com", "scheme": "https", "protocol": "HTTP/2", "headers": headers}},
	}}
	raw, _ := json.Marshal(req)
	file := filepath.Join(dir, name)
	_ = os.WriteFile(file, raw, 0o600)
	return file
}

func ghz(o options, name, addr, payload string) (result, error) {
	// A run of denials would measure the wrong path: one check first must
	// be allowed.
	if err := preflight(addr, payload); err != nil {
		return result{}, fmt.Errorf("%s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.ghz, "--insecure", "--call", "envoy.service.auth.v3.Authorization.Check",
		"-D", payload, "-c", strconv.Itoa(o.concurrency), "--connections", strconv.Itoa(o.connections),
		"-z", o.duration.String(), "-O", "json", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("ghz %s: %v: %s", name, err, stderr.String())
	}
	var rep struct {
		Count   int     `json:"count"`
		RPS     float64 `json:"rps"`
		Latency []struct {
			Percentage int   `json:"percentage"`
			Latency    int64 `json:"latency"`
		} `json:"latencyDistribution"`
		Status map[string]int `json:"statusCodeDistribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return result{}, fmt.Errorf("ghz %s: report: %v", name, err)
	}
	r := result{name: name, rps: rep.RPS, count: rep.Count}
	for code, n := range rep.Status {
		// Calls still in flight when the run's time is up end Canceled.
		if code != "OK" && code != "Canceled" {
			r.errors += n
			r.errorCodes = append(r.errorCodes, fmt.Sprintf("%s:%d", code, n))
		}
	}
	for _, l := range rep.Latency {
		switch l.Percentage {
		case 50:
			r.p50 = time.Duration(l.Latency)
		case 99:
			r.p99 = time.Duration(l.Latency)
		}
	}
	return r, nil
}

// preflight sends the payload once over gRPC and fails unless it is allowed.
func preflight(addr, payload string) error {
	raw, err := os.ReadFile(payload)
	if err != nil {
		return err
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &req)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if code := resp.GetStatus().GetCode(); code != 0 {
		return fmt.Errorf("check denied (code %d): %s", code, resp.GetDeniedResponse().GetBody())
	}
	return nil
}

// commandCalls sums the calls of every command Redis has served.
func commandCalls(c *goredis.Client) (int64, error) {
	info, err := c.Info(context.Background(), "commandstats").Result()
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
			n, _ := strconv.ParseInt(rest, 10, 64)
			total += n
		}
	}
	return total, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
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
