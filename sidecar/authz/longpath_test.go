package authz_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

// longPathCheck is a check of a public page whose path has n more
// one-letter segments: /catalog/a/a/...; upstreams such as Magento read
// the extra segments as key/value parameters and act on such a path.
func longPathCheck(n int) *authv3.CheckRequest {
	path := "/catalog/" + strings.Repeat("a/", n)
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "GET", Path: path, Host: "shop.example.com", Protocol: "HTTP/1.1",
		Headers: map[string]string{":authority": "shop.example.com", ":method": "GET", ":path": path},
	}}}}
}

// A check whose path has thousands of segments (5.8 KB for 2,900, within
// nginx's 8 KB request line) is logged like any other: its input holds
// route_dirs, the route from each segment on, which the decision log once
// weighed at the square of the path and dropped whole past
// max_queue_bytes (8 MiB), leaving an allowed request without a record.
func TestLongPathDecisionIsLogged(t *testing.T) {
	var out logtest.Lines
	cfg := decisionlog.Defaults()
	cfg.Sink = decisionlog.SinkStdout
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&out), decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := shippedPipeline(t, authz.WithDecisionLogger(l), authz.WithDecisionInput(true))
	segments := []int{2000, 2900}
	for _, n := range segments {
		if resp := p.Check(context.Background(), longPathCheck(n)); !resp.Allowed {
			t.Fatalf("%d segments: want allowed (a public page), got %s", n, resp.Reason)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	recs := out.Records(t)
	if len(recs) != len(segments) || l.Dropped() != 0 {
		t.Fatalf("%d allowed checks left %d decision records, %d dropped", len(segments), len(recs), l.Dropped())
	}
	for i, r := range recs {
		if r["result"] != "allow" || !strings.HasPrefix(r["path"].(string), "/catalog/a/a/") {
			t.Errorf("record %d = %v %v, want the allowed long path", i, r["result"], r["path"])
		}
	}
}
