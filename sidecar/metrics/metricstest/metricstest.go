// Package metricstest reads the shipped Grafana dashboard and Prometheus
// rules for the metric names they query, so tests can check each one is
// exported — by the collectors, and by a running Deputy.
package metricstest

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"
)

var (
	knownPrefix = regexp.MustCompile(`\b(?:deputy|grpc|go|process)_[a-zA-Z0-9_:]+`)
	selector    = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)
	quoted      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers    = regexp.MustCompile(`\{[^}]*\}`)
	grouping    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

// MetricNames returns the metric names a PromQL expression reads.
func MetricNames(t testing.TB, expr string) []string {
	t.Helper()
	e := grouping.ReplaceAllString(quoted.ReplaceAllString(expr, `""`), "")
	for _, m := range selector.FindAllStringSubmatch(e, -1) {
		if !knownPrefix.MatchString(m[1]) {
			t.Errorf("%q selects %q, which no Deputy collector exports", expr, m[1])
		}
	}
	return knownPrefix.FindAllString(matchers.ReplaceAllString(e, "{}"), -1)
}

// Rules is a PrometheusRule groups list.
type Rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// LoadRules reads and strictly decodes the alert rules file.
func LoadRules(t testing.TB, rulesFile string) Rules {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var r Rules
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("rules are not a groups list: %v", err)
	}
	return r
}

// DashboardExprs walks the dashboard JSON for every PromQL it runs:
// panel targets and templating queries.
func DashboardExprs(t testing.TB, dashboardFile string) (exprs []string, panels []map[string]any) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(d)
	for _, p := range d["panels"].([]any) {
		panels = append(panels, p.(map[string]any))
	}
	return exprs, panels
}

// Queried returns every metric name the dashboard and the rules read.
func Queried(t testing.TB, dashboardFile, rulesFile string) map[string]bool {
	t.Helper()
	exprs, _ := DashboardExprs(t, dashboardFile)
	for _, g := range LoadRules(t, rulesFile).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("found only %d queries; the walk is broken", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range MetricNames(t, e) {
			used[n] = true
		}
	}
	return used
}

// Series returns the value of the first series of name whose labels
// include want (a histogram's sample count), and whether there is one.
func Series(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}
