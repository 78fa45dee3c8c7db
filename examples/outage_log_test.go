package examples_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestRedisOutageLogIsBoundedJSON stops Redis for a few seconds while
// checks that need state keep coming, each with a session no cache
// holds: every one fails to dial or is refused by the breaker. Deputy's
// log stays JSON and short: one line when state becomes unavailable, one
// when it is back, and go-redis's own reports held to one per kind.
func TestRedisOutageLogIsBoundedJSON(t *testing.T) {
	rs := redistest.Start(t)
	p, grpcAddr := startTrailDeputy(t, rs.Addr, "--log-level", "info")
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func() {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		h := map[string]string{"cookie": "deputy_session=" + hex.EncodeToString(raw)}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "shop.example.com", Path: "/customer/account", Headers: h}}}}); err != nil {
			t.Fatal(err)
		}
	}
	check()
	mark := len(p.out.String())

	rs.Stop()
	const checks = 400
	outage := time.Now()
	for i := range checks {
		check()
		if i%100 == 99 {
			time.Sleep(500 * time.Millisecond) // the outage lasts a few probe rounds
		}
	}
	down := time.Since(outage)
	rs.Restart()
	waitLog(t, p, mark, "state available again")

	lines := strings.Split(strings.TrimSpace(p.out.String()[mark:]), "\n")
	var unavailable, back, redisClient int
	var notJSON []string
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			notJSON = append(notJSON, line)
			continue
		}
		switch msg, _ := rec["msg"].(string); {
		case strings.HasPrefix(msg, "state unavailable"):
			unavailable++
		case strings.HasPrefix(msg, "state available again"):
			back++
		case msg == "redis client":
			redisClient++
		}
	}
	if len(notJSON) > 0 {
		t.Errorf("%d of %d log lines are not JSON, the first: %q", len(notJSON), len(lines), notJSON[0])
	}
	t.Logf("%d checks needing state over a %s outage: %d log lines (%d from go-redis)", checks, down.Round(time.Millisecond), len(lines), redisClient)
	if unavailable != 1 || back != 1 {
		t.Errorf("logged state unavailable %d times and available again %d times, want once each:\n%s", unavailable, back, strings.Join(lines, "\n"))
	}
	// Every kind of go-redis message once, and a few lines of Deputy's own
	// (the decision log's sink, the invalidation subscription): not one
	// per check, nor per failed dial.
	if redisClient > 5 || len(lines) > 20 {
		t.Errorf("%d log lines (%d from go-redis) for one outage, want at most 20 (5):\n%s", len(lines), redisClient, strings.Join(lines, "\n"))
	}
}

// waitLog waits until the process has logged a line containing what after
// offset mark, failing the test if it has not within 30 s.
func waitLog(t *testing.T, p *process, mark int, what string) {
	t.Helper()
	eventually(t, 30*time.Second, func() bool { return strings.Contains(p.out.String()[mark:], what) },
		func() string { return fmt.Sprintf("Deputy never logged %q:\n%s", what, p.out.String()[mark:]) })
}
