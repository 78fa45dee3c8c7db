// Command deputy-bench is the load test of `make bench`. It starts, on
// loopback, a do-nothing ext_authz server (the floor, measured on every
// request the scenarios send), `deputy serve` on its
// shipped policies and on OPA-Envoy-style policies, and, when given an
// OPA-Envoy binary, OPA-Envoy on those same policies and requests. It
// drives each with ghz at the same concurrency, in interleaved rounds, and
// prints per scenario the medians of throughput, p50/p99, the server's own
// CPU time per check (utime+stime from /proc over the run) and its RSS
// under load, then the ratios the project holds itself to.
//
// Every scenario's request is checked to be decided as expected before its
// run. The command fails on errors (a server that does not start, a check
// that errs or is denied); a goal missed is reported, never a failure.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

type options struct {
	deputy, noop, ghz, redisServer, opaEnvoy string
	testdata, inproc, only, profile          string
	protoset                                 string // written by run
	concurrency, connections, rounds         int
	decodeAnswers                            bool
	duration                                 time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.deputy, "deputy", "bin/deputy", "deputy binary")
	flag.StringVar(&o.noop, "noop", "bin/noop-authz", "do-nothing ext_authz binary")
	flag.StringVar(&o.ghz, "ghz", "ghz", "ghz binary")
	flag.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary (empty: skip the Redis scenarios)")
	flag.StringVar(&o.opaEnvoy, "opa-envoy", "", "OPA-Envoy binary (opa-envoy-plugin), built per that project's instructions; empty: skip it")
	flag.StringVar(&o.testdata, "testdata", "cmd/deputy-bench/testdata", "directory of the OPA-Envoy-style policies and requests")
	flag.StringVar(&o.inproc, "inproc", "", "output of `go test -bench` to read the in-process ratios from")
	flag.StringVar(&o.only, "run", "", "run only the scenarios whose name matches this regexp (and their floors)")
	flag.IntVar(&o.concurrency, "c", 16, "concurrent streams")
	flag.IntVar(&o.connections, "connections", 4, "gRPC connections")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds; each figure is the median over them")
	flag.DurationVar(&o.duration, "z", 5*time.Second, "duration of each run")
	flag.BoolVar(&o.decodeAnswers, "decode-answers", false, "have ghz decode every answer in full (reflectively: tens of µs of the load tool's CPU per delegated check), not its status alone")
	flag.StringVar(&o.profile, "profile", "", "directory to write the CPU and heap profiles of each Deputy scenario's last run to (empty: none)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "deputy-bench:", err)
		os.Exit(1)
	}
}

// envoyStyle are the OPA-Envoy-style policies, each in its own directory of
// testdata/opa-envoy with policy.rego and request.json.
var envoyStyle = []struct {
	dir, label string
	path       string // OPA-Envoy's `path`; Deputy's query is data.<path with dots>
	header     string // a header the policy must inject, checked before the run
}{
	{"paths", "path rules", "envoy/authz/allow", ""},
	{"jwt", "JWT decode + headers", "envoy/authz/result", "x-current-user"},
	{"principal", "source principal", "envoy/authz/allow", ""},
}

// scenario is one server driven with one request.
type scenario struct {
	name       string
	srv        *server
	payload    string
	wantHeader string
	redis      *redisCounter // counts Redis round trips per check when set
	// floor is the do-nothing server on this scenario's request: ghz's
	// own cost grows with the request (a bearer token, a cookie), so a
	// ratio against the floor of another request would charge that
	// growth to the server. nil on the floors themselves.
	floor *scenario
	// answering is the do-nothing server giving, on the same request,
	// the answer this scenario's server gives: it separates what the
	// answer costs the load tool from what deciding it costs the server.
	answering *scenario
	// apart marks a scenario whose resident set is reported beside the
	// RSS goal, not in it: the goal is on the load of the others.
	apart   bool
	samples []sample
}

func run(o options) error {
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "deputy-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.protoset, err = writeProtoset(dir, o.decodeAnswers); err != nil {
		return err
	}
	procs := &procs{dir: dir}
	defer procs.stopAll()

	var scenarios []*scenario
	noop, err := procs.start("do-nothing", o.noop, "-addr", freeAddr())
	if err != nil {
		return err
	}
	// One floor per request: the do-nothing server answering exactly the
	// request the scenarios after it send.
	var floor *scenario
	newFloor := func(request, payload string) {
		floor = &scenario{name: "do-nothing ext_authz, " + request + " request", srv: noop, payload: payload}
		scenarios = append(scenarios, floor)
	}
	add := func(name string, srv *server, payload, header string) *scenario {
		s := &scenario{name: name, srv: srv, payload: payload, wantHeader: header, floor: floor}
		scenarios = append(scenarios, s)
		return s
	}
	// answeredAlike adds, after s, the do-nothing server giving s's answer.
	answeredAlike := func(s *scenario) error {
		resp, err := preflight(s.srv.grpc, s.payload, s.wantHeader)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		raw, err := protojson.Marshal(resp)
		if err != nil {
			return err
		}
		file := filepath.Join(dir, "answer-"+profileName(s.name)+".json")
		if err := os.WriteFile(file, raw, 0o600); err != nil {
			return err
		}
		srv, err := procs.start("do-nothing-answering", o.noop, "-answer", file, "-addr", freeAddr())
		if err != nil {
			return err
		}
		s.answering = add("do-nothing ext_authz, answering as "+s.name, srv, s.payload, "")
		return nil
	}

	// A delegated check must be allowed with the delegated identity
	// injected: an allow without it would measure the wrong path.
	const delegated = "x-deputy-subject"
	public := writePayload(dir, "public.json", nil)
	newFloor("public page", public)

	// Deputy on its shipped policies, embedded store, decision log on.
	d, err := procs.deputy(o, "deputy", "--decision-log-sink", "stdout")
	if err != nil {
		return err
	}
	shipped := map[string]*scenario{}
	shipped["public"] = add("deputy public page", d, public, "")
	dn, err := procs.deputy(o, "deputy-nolog", "--decision-log-sink", "none")
	if err != nil {
		return err
	}
	add("deputy public page, decision log none", dn, public, "")
	cookie, err := d.impersonate(o.deputy, dir)
	if err != nil {
		return err
	}
	imp := writePayload(dir, "imp.json", map[string]string{"cookie": "deputy_session=" + cookie}, "/customer/account")
	newFloor("impersonation", imp)
	shipped["impersonation"] = add("deputy impersonation", d, imp, delegated)
	if err := answeredAlike(shipped["impersonation"]); err != nil {
		return err
	}
	impFloor := floor
	pat, err := d.partner(o.deputy, dir)
	if err != nil {
		return err
	}
	partner := writePayload(dir, "partner.json",
		map[string]string{"authorization": "Bearer " + pat, "x-on-behalf-of": "acme"}, "/customers/acme/service-requests/42")
	newFloor("partner", partner)
	shipped["partner"] = add("deputy partner", d, partner, delegated)
	if err := answeredAlike(shipped["partner"]); err != nil {
		return err
	}
	rita, err := d.reseller(o.deputy, dir)
	if err != nil {
		return err
	}
	reseller := writePayload(dir, "reseller.json",
		map[string]string{"authorization": "Bearer " + rita, "x-on-behalf-of": "acme"}, "/support/cases")
	newFloor("reseller", reseller)
	shipped["reseller"] = add("deputy reseller", d, reseller, delegated)
	if err := answeredAlike(shipped["reseller"]); err != nil {
		return err
	}

	// A new page on every check, on a Deputy of its own: no input repeats,
	// so what the decision memo keeps can only cost (a crawler, an
	// enumeration). Its floor is the impersonation request's.
	dp, err := procs.deputy(o, "deputy-pages", "--decision-log-sink", "stdout")
	if err != nil {
		return err
	}
	pageCookie, err := dp.impersonate(o.deputy, dir)
	if err != nil {
		return err
	}
	floor = impFloor
	add("deputy impersonation, a new page every check", dp,
		writePayload(dir, "imp-pages.json", map[string]string{"cookie": "deputy_session=" + pageCookie}, "/customer/account/orders/"+requestNumber), delegated).apart = true

	// OPA-Envoy-style policies: Deputy (decision log off, as OPA-Envoy's
	// default) and OPA-Envoy on the same policy and request.
	type pair struct{ deputy, opaEnvoy *scenario }
	styled := make([]pair, len(envoyStyle))
	for i, p := range envoyStyle {
		pdir, err := filepath.Abs(filepath.Join(o.testdata, "opa-envoy", p.dir))
		if err != nil {
			return err
		}
		req := filepath.Join(pdir, "request.json")
		newFloor("OPA-Envoy-style "+p.label, req)
		ds, err := procs.deputy(o, "deputy-"+p.dir, "--decision-log-sink", "none", "--policy-paths", filepath.Join(pdir, "policy.rego"),
			"--policy-decision-query", "data."+strings.ReplaceAll(p.path, "/", "."))
		if err != nil {
			return err
		}
		styled[i].deputy = add("deputy, OPA-Envoy-style "+p.label, ds, req, p.header)
		if p.header != "" {
			// An answer carrying headers: what it costs the load tool shows
			// beside the overhead.
			if err := answeredAlike(styled[i].deputy); err != nil {
				return err
			}
		}
		if o.opaEnvoy != "" {
			es, err := procs.opaEnvoy(o, "opa-envoy-"+p.dir, pdir, p.path)
			if err != nil {
				return err
			}
			styled[i].opaEnvoy = add("OPA-Envoy, "+p.label, es, req, p.header)
		}
	}

	// Deputy on Redis: impersonation, and Redis round trips per check.
	if o.redisServer != "" {
		rc, err := procs.redis(o.redisServer)
		if err != nil {
			return err
		}
		// The same request as the embedded-store impersonation but for the
		// session id: that scenario's floor.
		floor = impFloor
		for _, sink := range []string{"none", "redis"} {
			// Own key prefixes: a second session of the same staff member
			// would end the first.
			dr, err := procs.deputy(o, "deputy-redis-"+sink, "--redis-addrs", rc.addr, "--redis-key-prefix", "bench-"+sink,
				"--decision-log-sink", sink)
			if err != nil {
				return err
			}
			cookie, err := dr.impersonate(o.deputy, dir)
			if err != nil {
				return err
			}
			s := add("deputy impersonation, Redis, decision log "+sink, dr,
				writePayload(dir, "imp-redis-"+sink+".json", map[string]string{"cookie": "deputy_session=" + cookie}, "/customer/account"), delegated)
			if sink == "none" {
				s.redis = rc
			}
		}
	}

	if o.only != "" {
		re, err := regexp.Compile(o.only)
		if err != nil {
			return fmt.Errorf("-run: %w", err)
		}
		kept := map[*scenario]bool{}
		for _, s := range scenarios {
			if s.floor != nil && re.MatchString(s.name) {
				kept[s], kept[s.floor] = true, true
				if s.answering != nil {
					kept[s.answering] = true
				}
			}
		}
		scenarios = slices.DeleteFunc(scenarios, func(s *scenario) bool { return !kept[s] })
	}
	for _, s := range scenarios {
		// A run of denials would measure the wrong path: one check first
		// must be decided as the scenario expects.
		if _, err := preflight(s.srv.grpc, s.payload, s.wantHeader); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	for round := 1; round <= o.rounds; round++ {
		fmt.Fprintf(os.Stderr, "round %d of %d\n", round, o.rounds)
		for _, s := range scenarios {
			var profiled func() error
			if round == o.rounds && s.srv.pprof != "" {
				profiled = cpuProfile(s.srv.pprof, filepath.Join(o.profile, profileName(s.name)), o.duration)
			}
			r, err := measure(o, s)
			if profiled != nil {
				if perr := profiled(); perr != nil && err == nil {
					err = fmt.Errorf("%s: CPU profile: %w", s.name, perr)
				}
				// The heap as the last collection of the run left it:
				// what is live under load, the part of the resident set
				// Deputy's own code decides.
				heap := filepath.Join(o.profile, strings.TrimSuffix(profileName(s.name), ".pprof")+".heap.pprof")
				if herr := fetchProfile(s.srv.pprof, "heap", heap, 30*time.Second); herr != nil && err == nil {
					err = fmt.Errorf("%s: heap profile: %w", s.name, herr)
				}
			}
			if err != nil {
				return err
			}
			// And decided alike after: a run that turned to denials (a
			// session or grant that ended) would measure the wrong path.
			if _, err := preflight(s.srv.grpc, s.payload, s.wantHeader); err != nil {
				return fmt.Errorf("%s, after round %d: %w", s.name, round, err)
			}
			s.samples = append(s.samples, r)
		}
	}

	var rep report
	for _, s := range scenarios {
		r := row{name: s.name, m: s.median()}
		if s.floor != nil {
			r.floor, r.hasFloor = s.floor.median(), true
		}
		rep.add(r, strings.HasPrefix(s.srv.name, "deputy"), s.apart)
	}
	for _, k := range []string{"public", "impersonation", "partner", "reseller"} {
		goal := 0.75
		if k == "public" {
			goal = 0.85
		}
		if len(shipped[k].samples) > 0 {
			g := throughputGoal{name: k, m: shipped[k].median(), floor: shipped[k].floor.median(), goal: goal,
				rounds: roundRatios(shipped[k].samples, shipped[k].floor.samples)}
			if a := shipped[k].answering; a != nil && len(a.samples) > 0 {
				g.answering, g.hasAnswering = a.median(), true
			}
			rep.throughput = append(rep.throughput, g)
		}
	}
	for i, p := range styled {
		if len(p.deputy.samples) == 0 {
			continue
		}
		g := overheadGoal{name: envoyStyle[i].label, deputy: p.deputy.median(), floor: p.deputy.floor.median()}
		if p.opaEnvoy != nil && len(p.opaEnvoy.samples) > 0 {
			g.opaEnvoy, g.hasOPAEnvoy = p.opaEnvoy.median(), true
		}
		rep.overhead = append(rep.overhead, g)
	}
	if o.inproc != "" {
		if rep.inproc, err = readInProcess(o.inproc); err != nil {
			return err
		}
	}
	rep.print(os.Stdout, o)

	var failed []string
	for _, s := range scenarios {
		for _, r := range s.samples {
			if r.errors > 0 {
				failed = append(failed, s.name)
				break
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("checks failed in: %s", strings.Join(failed, "; "))
	}
	return nil
}
