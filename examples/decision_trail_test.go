package examples_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// The decision trail end to end: the real binary logging to a real Redis
// stream under steady gRPC load, through a shutdown and an outage. Every
// check answered must have its record in the stream, found by decision id.

// startTrailDeputy runs `deputy serve --dev` with the shipped policies,
// logging decisions to the Redis at redisAddr.
func startTrailDeputy(t *testing.T, redisAddr string, args ...string) (*process, string) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	grpcAddr, metricsAddr := freeAddr(t), freeAddr(t)
	argv := append([]string{deputyBin, "serve", "--dev", "--log-level", "warn",
		"--grpc-addr", grpcAddr, "--http-addr", freeAddr(t), "--metrics-addr", metricsAddr,
		"--policy-paths", filepath.Join(repoRoot, "policies"),
		"--redis-addrs", redisAddr, "--decision-log-sink", "redis"}, args...)
	p := start(t, "deputy", []string{"DEPUTY_IDENTITY_DEV_KEY_FILE=" + filepath.Join(t.TempDir(), "dev-key.json")}, repoRoot, argv...)
	waitHTTP(t, p, "http://"+metricsAddr+"/readyz", http.StatusOK)
	return p, grpcAddr
}

// checkLoad sends checks of a public route over gRPC from a few
// concurrent clients and keeps the decision id of every answer.
type checkLoad struct {
	mu       sync.Mutex
	answered []string
	errs     []error
	stop     chan struct{}
	wg       sync.WaitGroup
}

// startLoad runs workers until stop is called or, when untilError, until
// each worker's first failed call (the server has shut down).
func startLoad(t *testing.T, grpcAddr string, workers int, untilError bool) *checkLoad {
	t.Helper()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "shop.example.com", Path: "/catalog/shoes"}}}}
	l := &checkLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := client.Check(ctx, req)
				cancel()
				if err == nil && codes.Code(resp.GetStatus().GetCode()) != codes.OK {
					err = &unexpected{resp}
				}
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, err)
				} else {
					l.answered = append(l.answered, resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue())
				}
				l.mu.Unlock()
				if err != nil && untilError {
					return
				}
			}
		}()
	}
	return l
}

type unexpected struct{ resp *authv3.CheckResponse }

func (u *unexpected) Error() string { return "public route not allowed: " + u.resp.String() }

// count is how many checks were answered so far.
func (l *checkLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.answered)
}

// waitAnswered waits until n more checks were answered, failing the test
// if they are not within 30 s.
func (l *checkLoad) waitAnswered(t *testing.T, n int) {
	t.Helper()
	want := l.count() + n
	deadline := time.Now().Add(30 * time.Second)
	for l.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("only %d checks answered, want %d; errors: %v", l.count(), want, l.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the load and returns the decision ids answered.
func (l *checkLoad) finish() ([]string, []error) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answered, l.errs
}

// loggedIDs reads every record in the decisions stream, by decision id.
func loggedIDs(t *testing.T, rs *redistest.Server) map[string]int {
	t.Helper()
	entries, err := rs.Client().XRange(context.Background(), decisionlog.DefaultStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]int, len(entries))
	for _, e := range entries {
		var r decisionlog.Record
		if err := json.Unmarshal([]byte(e.Values[decisionlog.RecordField].(string)), &r); err != nil {
			t.Fatalf("stream entry %s: %v", e.ID, err)
		}
		ids[r.DecisionID]++
	}
	return ids
}

// compareTrail fails unless every answered check has exactly one record
// and the stream holds no record of a check nobody saw answered.
func compareTrail(t *testing.T, answered []string, logged map[string]int) {
	t.Helper()
	lost := 0
	for _, id := range answered {
		switch logged[id] {
		case 0:
			lost++
		case 1:
		default:
			t.Errorf("decision %s logged %d times", id, logged[id])
		}
	}
	t.Logf("checks answered %d, records in the stream %d, lost %d", len(answered), len(logged), lost)
	if lost > 0 || len(logged) != len(answered) {
		t.Fatalf("decision trail: %d checks answered, %d records, %d answered checks without a record", len(answered), len(logged), lost)
	}
}

// TestSIGTERMUnderLoadLosesNoDecisionRecord stops Deputy with SIGTERM while
// clients keep checking: in-flight checks finish, their records are
// flushed before Deputy exits, and new checks are refused rather than
// answered unlogged.
func TestSIGTERMUnderLoadLosesNoDecisionRecord(t *testing.T) {
	rs := redistest.Start(t)
	p, grpcAddr := startTrailDeputy(t, rs.Addr)
	load := startLoad(t, grpcAddr, 8, true)
	load.waitAnswered(t, 2000)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("deputy did not exit after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("deputy exited %d after SIGTERM", code)
	}
	answered, errs := load.finish()
	if len(errs) == 0 {
		t.Fatal("clients saw no refusal: the load did not reach the shutdown")
	}
	compareTrail(t, answered, loggedIDs(t, rs))
}
