package tests

import (
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/promql/parser"
)

// renderedRules is the PrometheusRule the chart renders with its own rules
// files, by alert name.
func renderedRules(t *testing.T) map[string]monitoringv1.Rule {
	t.Helper()
	m := mustRender(t, "testdata/default.yaml", true)
	pr := m.get(t, "PrometheusRule", "shop-deputy").(*monitoringv1.PrometheusRule)
	rules := map[string]monitoringv1.Rule{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r
		}
	}
	return rules
}

// Every rule the chart renders is PromQL that Prometheus accepts: the
// operator hands it on as it is, and Prometheus refuses the whole group
// for one bad expression.
func TestRenderedRulesParse(t *testing.T) {
	for name, r := range renderedRules(t) {
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr.String()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// selectors lists the metric names an expression reads, with the
// aggregation (sum, max, min...) wrapping each directly, and the range
// functions (rate, quantile_over_time...) that read it.
type selectorUse struct {
	name, agg string
	funcs     []string
}

func selectors(t *testing.T, expr string) []selectorUse {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var uses []selectorUse
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		u := selectorUse{name: vs.Name}
		for i := len(path) - 1; i >= 0; i-- {
			switch p := path[i].(type) {
			case *parser.Call:
				u.funcs = append(u.funcs, p.Func.Name)
			case *parser.AggregateExpr:
				if u.agg == "" {
					u.agg = p.Op.String()
				}
			case *parser.BinaryExpr:
				i = -1 // stop at the nearest comparison or arithmetic
			}
		}
		uses = append(uses, u)
		return nil
	})
	return uses
}

// DeputyDecisionLogShort signals the log's reach shrinking suddenly, as
// a flood does, and not the steady state of a busy site (a full stream
// whose oldest record is younger than a fixed age). The stream is
// trimmed to the smallest max_len any writer uses, so the stream's
// fullness is judged against min, not max, of max_len.
func TestDecisionLogShortAlert(t *testing.T) {
	r, ok := renderedRules(t)["DeputyDecisionLogShort"]
	if !ok {
		t.Fatal("DeputyDecisionLogShort not rendered")
	}
	uses := selectors(t, r.Expr.String())
	var relative, fullness bool
	for _, u := range uses {
		switch u.name {
		case "deputy_decision_log_stream_oldest_age_seconds":
			if slices.Contains(u.funcs, "quantile_over_time") {
				relative = true
			}
		case "deputy_decision_log_stream_max_len":
			fullness = true
			if u.agg != "min" {
				t.Errorf("max_len aggregated with %q: the stream is trimmed to the smallest writer's max_len, want min", u.agg)
			}
		}
	}
	if !relative {
		t.Errorf("the oldest age is not compared with its own recent level (quantile_over_time): %s", r.Expr.String())
	}
	if !fullness {
		t.Errorf("the alert does not require the stream full at max_len: %s", r.Expr.String())
	}
	if r.For == nil || string(*r.For) == "" {
		t.Error("DeputyDecisionLogShort fires on one evaluation; want a for: of some minutes")
	}
}

// A stream the logger cannot read has no figures, and no alert on them
// fires: the failed reads have an alert of their own.
func TestDecisionLogStreamUnreadAlert(t *testing.T) {
	var found []string
	for name, r := range renderedRules(t) {
		for _, u := range selectors(t, r.Expr.String()) {
			if u.name == "deputy_decision_log_stream_read_errors_total" && slices.Contains(u.funcs, "increase") {
				found = append(found, name)
			}
		}
	}
	if len(found) == 0 {
		t.Fatal("no alert reads deputy_decision_log_stream_read_errors_total")
	}
	for _, name := range found {
		if !strings.HasPrefix(name, "DeputyDecisionLog") {
			t.Errorf("alert %s: name it with the decision log's others", name)
		}
	}
}

// A spool on a full or read-only disk fails every write while the sink
// is down, and records then wait in memory alone: an alert reads the
// failed writes, named with the decision log's others.
func TestDecisionLogSpoolFailingAlert(t *testing.T) {
	var found []string
	for name, r := range renderedRules(t) {
		for _, u := range selectors(t, r.Expr.String()) {
			if u.name == "deputy_decision_log_spool_errors_total" && (slices.Contains(u.funcs, "increase") || slices.Contains(u.funcs, "rate")) {
				found = append(found, name)
			}
		}
	}
	if len(found) == 0 {
		t.Fatal("no alert reads deputy_decision_log_spool_errors_total")
	}
	for _, name := range found {
		if !strings.HasPrefix(name, "DeputyDecisionLog") {
			t.Errorf("alert %s: name it with the decision log's others", name)
		}
	}
}

// DeputyRedisNotDurable fires when a replica reads a Redis master without
// AOF: the gauge is the same on every replica reading the same masters,
// so one alert per job, and min, so that one master without AOF is
// enough. Failed readings leave the gauge absent: another alert reads
// them.
func TestRedisNotDurableAlert(t *testing.T) {
	rules := renderedRules(t)
	r, ok := rules["DeputyRedisNotDurable"]
	if !ok {
		t.Fatal("DeputyRedisNotDurable not rendered")
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr.String())
	if err != nil {
		t.Fatal(err)
	}
	cmp, ok := e.(*parser.BinaryExpr)
	if !ok || cmp.Op.String() != "==" || cmp.RHS.String() != "0" {
		t.Fatalf("DeputyRedisNotDurable is not a comparison with 0: %s", r.Expr.String())
	}
	uses := selectors(t, r.Expr.String())
	if len(uses) != 1 || uses[0].name != "deputy_redis_aof_enabled" || uses[0].agg != "min" {
		t.Fatalf("DeputyRedisNotDurable reads %+v, want min of deputy_redis_aof_enabled", uses)
	}
	if r.For == nil || string(*r.For) == "" {
		t.Error("DeputyRedisNotDurable fires on one evaluation; want a for: of some minutes")
	}
	var unread bool
	for _, r := range rules {
		for _, u := range selectors(t, r.Expr.String()) {
			unread = unread || u.name == "deputy_redis_persistence_read_errors_total" && slices.Contains(u.funcs, "increase")
		}
	}
	if !unread {
		t.Error("no alert reads deputy_redis_persistence_read_errors_total")
	}
}

// A refused bundle is counted once however long it stays refused, and a
// failing bundle server keeps Deputy on a stale set (or unready) for as
// long as it fails: DeputyBundleActivationFailing reads the gauge that
// holds while the last attempt failed, not an increase that clears
// after its window while the failure lasts.
func TestBundleFailingAlert(t *testing.T) {
	r, ok := renderedRules(t)["DeputyBundleActivationFailing"]
	if !ok {
		t.Fatal("DeputyBundleActivationFailing not rendered")
	}
	var gauge bool
	for _, u := range selectors(t, r.Expr.String()) {
		switch {
		case u.name == "deputy_bundle_failing" && len(u.funcs) == 0:
			gauge = true
		case len(u.funcs) > 0:
			t.Errorf("%s read through %v: it clears after its window while a failure lasts", u.name, u.funcs)
		}
	}
	if !gauge {
		t.Errorf("the alert does not read deputy_bundle_failing as it is: %s", r.Expr.String())
	}
	if r.For == nil || string(*r.For) == "" {
		t.Error("fires on one failed poll; want a for: of some minutes, so one failed fetch is not paged")
	}
	if d := r.Annotations["description"]; !strings.Contains(d, "deputy_bundle_fetch_failures_total") || !strings.Contains(d, "policy update refused") {
		t.Errorf("the description names neither the failed fetches nor the log line to read:\n%s", d)
	}
}
