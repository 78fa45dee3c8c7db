package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// holdRequest sends a management API call whose body never completes, as
// a slow or stalled client does, and returns its connection.
func holdRequest(t *testing.T, addr, token string) net.Conn {
	t.Helper()
	return sendRaw(t, addr, fmt.Sprintf("PUT /deputy/v1/customers/c1/consent HTTP/1.1\r\nHost: shop.example\r\n"+
		"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", token))
}

// streamIDs is the set of decision ids in the decision stream.
func streamIDs(t *testing.T, rs *redistest.Server, stream string) map[string]bool {
	t.Helper()
	entries, err := rs.Client().XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range entries {
		var r decisionlog.Record
		if err := json.Unmarshal([]byte(e.Values[decisionlog.RecordField].(string)), &r); err != nil {
			t.Fatal(err)
		}
		ids[r.DecisionID] = true
	}
	return ids
}

// TestShutdownKeepsDecisionRecordsWhenAClientHoldsTheServers answers
// checks while a management API call is held open by a client that never
// finishes its body, then stops the server. The held call uses up the
// whole shutdown_timeout; the records of the answered checks are still
// queued then, and must reach the Redis stream all the same, and the held
// connection must be cut rather than outlive the process's listeners.
func TestShutdownKeepsDecisionRecordsWhenAClientHoldsTheServers(t *testing.T) {
	rs := redistest.Start(t)
	cfg := testConfig(t, "../../policies", func(c *Config) {
		c.ShutdownTimeout = time.Second
		c.Redis.Addrs = []string{rs.Addr}
		c.DecisionLog.Sink = decisionlog.SinkRedis
		c.DecisionLog.FlushInterval = time.Hour // only the shutdown flush writes
	})
	stop, done := startRun(t, &cfg)
	defer stop()
	waitListening(t, cfg.HTTP.Addr)

	held := holdRequest(t, cfg.HTTP.Addr, devToken(t, &cfg)(identity.DevClaims{Subject: "c1", Roles: []string{"customer"}}))

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
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
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
		t.Errorf("%d of %d answered checks have no decision record in the stream", lost, checks)
	}

	// The held call was never answered: the server cut it when its
	// shutdown budget ran out.
	if err := held.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(held)
	if err != nil {
		t.Errorf("held connection still open after shutdown: %v", err)
	}
	if len(got) > 0 {
		t.Errorf("held call was answered, so it never held the shutdown: %q", got)
	}
}

// TestHTTPCutsAClientThatNeverFinishesItsBody holds a management API call
// open, body unfinished, with no shutdown under way: http.read_timeout
// ends it, and the call changes nothing.
func TestHTTPCutsAClientThatNeverFinishesItsBody(t *testing.T) {
	cfg := testConfig(t, "../../policies", func(c *Config) { c.HTTP.ReadTimeout = 200 * time.Millisecond })
	runServer(t, &cfg)
	held := holdRequest(t, cfg.HTTP.Addr, devToken(t, &cfg)(identity.DevClaims{Subject: "c1", Roles: []string{"customer"}}))
	if err := held.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(held), nil)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("the server still waits for the body")
	case err == nil && resp.StatusCode < 400:
		t.Fatalf("unfinished call answered %s", resp.Status)
	}
}
