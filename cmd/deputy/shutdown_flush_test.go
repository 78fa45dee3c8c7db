package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// scrapeValue is the value of the unlabelled series name on the metrics
// listener at addr, as its text; err when the listener does not answer.
func scrapeValue(addr, name string) (string, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %s in /metrics", name)
}

// TestShutdownFlushesEachStoreAndKeepsMetricsUntilDone stops Deputy while
// Redis answers every connection but those that append to the audit
// trail, which stall (a proxy swallows their commands): the delegation
// records cannot be appended, the decision records can. The records'
// flush uses up flush_timeout; the decision log's flush must have a budget
// of its own, so every answered check's record reaches the stream. And the
// metrics listener serves through the flush and past it: a scrape sees
// the audit entry lost at the deadline, and no decision record dropped.
func TestShutdownFlushesEachStoreAndKeepsMetricsUntilDone(t *testing.T) {
	rs := redistest.Start(t)
	proxy := redistest.StartProxy(t, rs.Addr)
	cfg := testConfig(t, "../../policies", func(c *Config) {
		c.ShutdownTimeout = time.Second
		c.Redis.Addrs = []string{proxy.Addr}
		c.DecisionLog.Sink = decisionlog.SinkRedis
		c.DecisionLog.FlushInterval = time.Hour // only the shutdown flush writes
		c.DecisionLog.FlushTimeout = 2 * time.Second
	})
	stop, done := startRun(t, &cfg)
	defer stop()
	waitListening(t, cfg.Metrics.Addr)
	waitListening(t, cfg.HTTP.Addr)

	// A partner request made while the audit trail's appends stall: the
	// request is stored, its audit entry waits in the recorder.
	proxy.StallOn("deputy:audit")
	pat := devToken(t, &cfg)(identity.DevClaims{Subject: "pat", Org: "partnerco"})
	apiCall(t, "http://"+cfg.HTTP.Addr, "POST", "/deputy/v1/partner/requests", pat,
		`{"customer":"acme","contact_email":"c@acme.example","expiry_days":30,"level":"look","scope":"organisation"}`, 0)
	eventually(t, "the audit entry waiting in the recorder", func() bool {
		v, err := scrapeValue(cfg.Metrics.Addr, "deputy_records_pending")
		return err == nil && v != "0"
	})

	conn, err := grpc.NewClient(cfg.GRPC.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	const checks = 20
	var answered []string
	for i := range checks {
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "shop.example", Path: fmt.Sprintf("/catalog/item-%d", i)}}}})
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
		if id == "" {
			t.Fatalf("check %d answered without a decision id", i)
		}
		answered = append(answered, id)
	}

	stop() // SIGTERM
	eventually(t, "the HTTP listener closed", func() bool {
		c, err := net.Dial("tcp", cfg.HTTP.Addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The servers have stopped and the records' flush is under way.
	if _, err := scrapeValue(cfg.Metrics.Addr, "deputy_records_pending"); err != nil {
		t.Fatalf("metrics during the shutdown flush: %v", err)
	}
	eventually(t, "a scrape showing the audit entry lost at shutdown", func() bool {
		v, err := scrapeValue(cfg.Metrics.Addr, "deputy_audit_dropped_total")
		return err == nil && v == "1"
	})
	if v, err := scrapeValue(cfg.Metrics.Addr, "deputy_decision_log_dropped_total"); err == nil && v != "0" {
		t.Errorf("deputy_decision_log_dropped_total = %s, want 0", v)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}

	logged := streamIDs(t, rs, cfg.DecisionLog.Stream)
	var lost int
	for _, id := range answered {
		if !logged[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d answered checks have no decision record in the stream: the decision log's flush had no time left", lost, checks)
	}
}
