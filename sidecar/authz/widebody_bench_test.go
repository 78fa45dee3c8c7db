package authz_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// wideBodyRequest is an anonymous POST to the cart with a JSON body of n
// top-level keys.
func wideBodyRequest(b testing.TB, n int) *authv3.CheckRequest {
	var body strings.Builder
	body.WriteString("{")
	for i := range n {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `"k%d":%d`, i, i)
	}
	body.WriteString("}")
	req := withHeaders(b, "/checkout/cart/add", map[string]string{"content-type": "application/json"})
	h := req.Attributes.Request.Http
	h.Method, h.Headers[":method"], h.Body = "POST", "POST", body.String()
	return req
}

// BenchmarkCheckWideJSONBody is a check whose JSON body has 20,000 keys,
// with its decision (input kept) logged and not: what logging adds is the
// enqueue, and sizing the input for the queue's byte bound must cost no
// more than walking it once. The logger is not started, so that no
// writer shares the cores with the check.
func BenchmarkCheckWideJSONBody(b *testing.B) {
	req := wideBodyRequest(b, 20000)
	b.Run("unlogged", func(b *testing.B) {
		benchOnce(b, shippedPipeline(b, authz.WithDecisionInput(true)), req)
	})
	b.Run("logged", func(b *testing.B) {
		cfg := decisionlog.Defaults()
		cfg.Sink = decisionlog.SinkStdout
		cfg.MaxQueueBytes = 1 << 40 // every input counted and kept
		cfg.QueueSize = 1 << 20
		sink, err := decisionlog.NewSink(cfg, nil, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		l, err := decisionlog.New(cfg, sink, decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		benchOnce(b, shippedPipeline(b, authz.WithDecisionInput(true), authz.WithDecisionLogger(l)), req)
	})
}

// benchOnce checks req, read afresh from the wire each time as Deputy
// does (a body parsed once is not parsed again).
func benchOnce(b *testing.B, p *authz.Pipeline, req *authv3.CheckRequest) {
	ctx := context.Background()
	if resp := p.Check(ctx, req); resp.Reason == "" {
		b.Fatalf("no reason: %+v", resp)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		p.Check(ctx, req)
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}
