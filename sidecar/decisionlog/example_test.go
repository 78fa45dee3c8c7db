package decisionlog_test

import (
	"context"
	"os"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// A logger writing JSON lines to stdout: Log queues, Stop flushes.
func ExampleNew() {
	cfg := decisionlog.Defaults()
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(os.Stdout))
	if err != nil {
		panic(err)
	}
	_ = l.Start(context.Background())
	l.Log(&sidecar.Decision{
		ID: "d-1", Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Allowed: true, HTTPStatus: 200, Reason: "partner_grant",
		Method: "GET", Host: "support.example.com", Path: "/cases",
		TraceID:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Delegation: &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g-7", Actor: "ann", Subject: "org-42", Level: "look"},
		Revision:   "3f2a9c1", Latency: 42 * time.Microsecond,
	})
	_ = l.Stop(context.Background())
	// Output:
	// {"decision_id":"d-1","time":"2026-03-01T12:00:00Z","actor":"ann","subject":"org-42","mode":"partner","level":"look","session_id":"g-7","method":"GET","host":"support.example.com","path":"/cases","result":"allow","reason":"partner_grant","http_status":200,"bundle_revision":"3f2a9c1","latency_ms":0.042,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
}
