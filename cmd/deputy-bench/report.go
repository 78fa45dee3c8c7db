package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

type row struct {
	name     string
	m        sample
	floor    sample // the do-nothing server on the same request
	hasFloor bool   // false on the floors themselves
}

// throughputGoal: a shipped scenario's throughput at least goal × the floor's.
type throughputGoal struct {
	name  string
	m     sample
	floor sample // on the same request
	goal  float64
	// answering: the do-nothing server giving Deputy's answer to the
	// same request, the most any server giving that answer could reach.
	answering    sample
	hasAnswering bool
	// rounds is the ratio of each round (the scenario and its floor run
	// back to back in it): their spread is the host's noise.
	rounds []float64
}

// overheadGoal: Deputy's CPU per check above the floor at most ¼ of
// OPA-Envoy's, on the same policy and request.
type overheadGoal struct {
	name        string
	deputy      sample
	opaEnvoy    sample
	floor       sample // on the same request
	hasOPAEnvoy bool
}

const (
	overheadGoalRatio = 0.25
	rssGoalMB         = 48
	inprocPublicGoal  = 2.0
	inprocDelegGoal   = 4.0
)

type report struct {
	rows       []row
	throughput []throughputGoal
	overhead   []overheadGoal
	deputyRSS  float64
	rssOf      row   // the scenario of the largest Deputy process
	apart      []row // Deputy scenarios outside the RSS goal's load
	inproc     map[string]benchFigure
}

// add adds a scenario's row; a Deputy scenario's resident set counts
// toward the RSS goal unless it is apart.
func (r *report) add(x row, deputy, apart bool) {
	r.rows = append(r.rows, x)
	switch {
	case deputy && apart:
		r.apart = append(r.apart, x)
	case deputy && x.m.rssMB > r.deputyRSS:
		r.deputyRSS, r.rssOf = x.m.rssMB, x
	}
}

func (r report) print(out io.Writer, o options) {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\nLoad over loopback: ghz, %d streams on %d connections, %s per run, medians of %d interleaved rounds\n\n",
		o.concurrency, o.connections, o.duration, o.rounds)
	fmt.Fprintln(w, "Each do-nothing row is the floor of the rows under it, up to the next: the same request, answered by a server that does nothing.")
	fmt.Fprintln(w, "scenario\tchecks/s\tp50\tp99\tCPU µs/check\tabove floor\tghz µs/check\tRSS MB\tvs do-nothing\terrors\tRedis trips/check")
	for _, x := range r.rows {
		m := x.m
		trips := "-"
		if m.hasTrips {
			trips = fmt.Sprintf("%.4f", m.trips)
		}
		above, vs := "-", "-"
		if x.hasFloor {
			above, vs = fmt.Sprintf("%+.1f", m.cpuUS-x.floor.cpuUS), fmt.Sprintf("%.0f%%", 100*m.rps/x.floor.rps)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%.1f\t%s\t%.1f\t%.1f\t%s\t%d\t%s\n", x.name, m.rps,
			m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond), m.cpuUS, above, m.loadCPUUS, m.rssMB,
			vs, m.errors, trips)
	}
	_ = w.Flush()
	for _, x := range r.rows {
		for _, e := range x.m.errorCodes {
			fmt.Fprintf(out, "error in %s: %s\n", x.name, e)
		}
	}

	fmt.Fprintf(w, "\nGoals (ratios from this run)\n\n")
	fmt.Fprintln(w, "goal\tmeasured\ttarget\tmet\tfrom")
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	for _, g := range r.overhead {
		name := "CPU above floor vs OPA-Envoy's, " + g.name
		if !g.hasOPAEnvoy {
			fmt.Fprintf(w, "%s\tnot measured\t≤ %.2f\t-\tno OPA-Envoy binary given (OPA_ENVOY=...)\n", name, overheadGoalRatio)
			continue
		}
		dOver, eOver := g.deputy.cpuUS-g.floor.cpuUS, g.opaEnvoy.cpuUS-g.floor.cpuUS
		ratio := dOver / eOver
		fmt.Fprintf(w, "%s\t%.2f\t≤ %.2f\t%s\tDeputy +%.1f µs, OPA-Envoy +%.1f µs; CPU per check %.2f× OPA-Envoy's, throughput %.2f×\n",
			name, ratio, overheadGoalRatio, met(eOver > 0 && ratio <= overheadGoalRatio), dOver, eOver,
			g.deputy.cpuUS/g.opaEnvoy.cpuUS, g.deputy.rps/g.opaEnvoy.rps)
	}
	for _, g := range r.throughput {
		ratio := g.m.rps / g.floor.rps
		bound := ""
		if g.hasAnswering {
			bound = fmt.Sprintf("; a do-nothing server giving Deputy's answer: %.2f (load tool %.1f vs %.1f µs/check)",
				g.answering.rps/g.floor.rps, g.answering.loadCPUUS, g.floor.loadCPUUS)
		}
		fmt.Fprintf(w, "throughput vs do-nothing, %s\t%.2f\t≥ %.2f\t%s\t%.0f vs %.0f checks/s (same request)%s%s\n",
			g.name, ratio, g.goal, met(ratio >= g.goal), g.m.rps, g.floor.rps, roundsOf(g.rounds), bound)
	}
	fmt.Fprintf(w, "RSS under load, largest Deputy process\t%.1f MB\t≤ %d MB\t%s\t%s: anonymous (heap, stacks) %.1f MB, file-backed (the binary's pages) %.1f MB\n",
		r.deputyRSS, rssGoalMB, met(r.deputyRSS <= rssGoalMB), r.rssOf.name, r.rssOf.m.anonMB, r.rssOf.m.fileMB)
	for _, x := range r.apart {
		fmt.Fprintf(w, "RSS, %s (not the goal's load)	%.1f MB	-	-	anonymous %.1f MB, file-backed %.1f MB\n", x.name, x.m.rssMB, x.m.anonMB, x.m.fileMB)
	}

	floor, ok := r.inproc["BenchmarkCheckFloor"]
	if r.inproc == nil || !ok {
		fmt.Fprintf(w, "in process (go test -bench)\tnot measured\t\t-\tno benchmark output given (-inproc)\n")
	} else {
		names := make([]string, 0, len(r.inproc))
		for n := range r.inproc {
			if n == "BenchmarkCheck/public" || strings.HasPrefix(n, "BenchmarkCheckDelegated/") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			b := r.inproc[n]
			goal := inprocDelegGoal
			if n == "BenchmarkCheck/public" {
				goal = inprocPublicGoal
			}
			ratio := b.ns / floor.ns
			fmt.Fprintf(w, "in process, %s / BenchmarkCheckFloor\t%.2f×\t≤ %.0f×\t%s\t%.1f µs %d allocs vs %.1f µs %d allocs\n",
				n, ratio, goal, met(ratio <= goal), b.ns/1e3, b.allocs, floor.ns/1e3, floor.allocs)
		}
		// Not a goal: the impersonated check on a route seen for the first
		// time, whose matching the policy memoizes (the price of a miss).
		if b, ok := r.inproc["BenchmarkCheckUnseenRoute/impersonation"]; ok {
			fmt.Fprintf(w, "in process, BenchmarkCheckUnseenRoute/impersonation / BenchmarkCheckFloor\t%.2f×\t-\t-\t%.1f µs %d allocs: every check a route not matched before (no goal)\n",
				b.ns/floor.ns, b.ns/1e3, b.allocs)
		}
		// Not goals either: the other kinds of page, decided in other
		// branches of the shipped decision than the catalog page.
		for _, o := range []struct{ name, what string }{
			{"BenchmarkCheck/home", "the home page, a public path"},
			{"BenchmarkCheckSignedIn/token", "a page for signed-in customers, with a verified token"},
			{"BenchmarkCheckSignedIn/no_token", "that page without a token (401)"},
		} {
			if b, ok := r.inproc[o.name]; ok {
				fmt.Fprintf(w, "in process, %s / BenchmarkCheckFloor\t%.2f×\t-\t-\t%.1f µs %d allocs: %s (no goal)\n",
					o.name, b.ns/floor.ns, b.ns/1e3, b.allocs, o.what)
			}
		}
	}
	_ = w.Flush()
}

// benchFigure is the median of one benchmark's runs.
type benchFigure struct {
	ns     float64
	allocs int64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:.*?\s(\d+) allocs/op)?`)

// readInProcess reads `go test -bench -benchmem` output: per benchmark,
// the median ns/op and allocs/op of its runs.
func readInProcess(path string) (map[string]benchFigure, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ns := map[string][]float64{}
	allocs := map[string][]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		ns[m[1]] = append(ns[m[1]], v)
		if m[3] != "" {
			a, _ := strconv.ParseFloat(m[3], 64)
			allocs[m[1]] = append(allocs[m[1]], a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := map[string]benchFigure{}
	for n, v := range ns {
		out[n] = benchFigure{ns: median(v), allocs: int64(median(allocs[n]))}
	}
	return out, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// roundsOf prints the ratios of the rounds, when there are several.
func roundsOf(ratios []float64) string {
	if len(ratios) < 2 {
		return ""
	}
	parts := make([]string, len(ratios))
	for i, r := range ratios {
		parts[i] = fmt.Sprintf("%.2f", r)
	}
	return "; by round " + strings.Join(parts, ", ")
}

// roundRatios is the throughput of s over its floor's, round by round.
func roundRatios(s, floor []sample) []float64 {
	n := min(len(s), len(floor))
	out := make([]float64, 0, n)
	for i := range n {
		if floor[i].rps > 0 {
			out = append(out, s[i].rps/floor[i].rps)
		}
	}
	return out
}
