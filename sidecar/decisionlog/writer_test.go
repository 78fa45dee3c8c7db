package decisionlog

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// BenchmarkWriteRecord is the writer's work per check: the record built
// from a decision, its input masked, the JSON encoded; without a mask
// policy, and with the shipped policies as the mask policy (as serve runs).
func BenchmarkWriteRecord(b *testing.B) {
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		b.Fatal(err)
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := engine.Activate(context.Background(), set); err != nil {
		b.Fatal(err)
	}
	input, err := ast.InterfaceToValue(benchRecord().Input)
	if err != nil {
		b.Fatal(err)
	}
	d := &sidecar.Decision{ID: "0f8d3c2b9a1e4f5d8c7b6a5f4e3d2c1b", Time: time.Now(), Allowed: true, HTTPStatus: 200,
		Reason: "impersonation_session", Method: "GET", Host: "shop.example.com", Path: "/customer/account",
		TraceID:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Delegation: &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "imp_1", Actor: "staff-1", Subject: "cust-9"},
		Latency:    42 * time.Microsecond, Input: input, Policy: engine.Current()}
	public := *d
	public.Reason, public.Path, public.Delegation = "public_route", "/catalog/shoes", nil
	public.Input = ast.MustParseTerm(publicPageInput).Value
	for _, tc := range []struct {
		name string
		d    *sidecar.Decision
		opts []Option
	}{
		{"no-mask-policy", d, nil},
		{"shipped-policies", d, []Option{WithMaskPolicy()}},
		{"public-page/shipped-policies", &public, []Option{WithMaskPolicy()}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l, err := New(Defaults(), DiscardSink{}, tc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var buf []byte // reused, as a batch's buffer is
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = l.appendRecord(ctx, buf[:0], tc.d, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// countingSink counts what reaches it.
type countingSink struct{ n int }

func (s *countingSink) Write(_ context.Context, batch [][]byte) error {
	s.n += len(batch)
	return nil
}

// With sink none a check pays nothing for the decision log: nothing is
// queued, so nothing is masked, encoded or handed to a sink.
func TestSinkNoneDoesNoWork(t *testing.T) {
	for _, tc := range []struct {
		sink   string
		queued int
	}{{SinkNone, 0}, {SinkStdout, 3}} {
		t.Run(tc.sink, func(t *testing.T) {
			cfg := Defaults()
			cfg.Sink = tc.sink
			sink := &countingSink{}
			l, err := New(cfg, sink)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				l.Log(&sidecar.Decision{ID: "d", Input: ast.NewObject()})
			}
			if got := l.QueueDepth(); got != tc.queued {
				t.Fatalf("queued %d, want %d", got, tc.queued)
			}
			if err := l.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if sink.n != tc.queued || l.Flushed() != uint64(tc.queued) || l.Dropped() != 0 {
				t.Fatalf("sink got %d, flushed %d, dropped %d; want %d written", sink.n, l.Flushed(), l.Dropped(), tc.queued)
			}
		})
	}
}
