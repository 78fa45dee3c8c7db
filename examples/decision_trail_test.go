package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
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
// logging decisions to the Redis at redisAddr. The tests find every
// record of a load in the stream, tens of thousands: the stream keeps a
// million, within a stream_max_bytes raised to match.
func startTrailDeputy(t *testing.T, redisAddr string, args ...string) (*process, string) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	grpcAddr, metricsAddr := freeAddr(t), freeAddr(t)
	argv := append([]string{deputyBin, "serve", "--dev", "--log-level", "warn",
		"--grpc-addr", grpcAddr, "--http-addr", freeAddr(t), "--metrics-addr", metricsAddr,
		"--policy-paths", filepath.Join(repoRoot, "policies"),
		"--redis-addrs", redisAddr, "--decision-log-sink", "redis",
		"--decision-log-max-len", "1000000", "--decision-log-max-record-bytes", "8192", "--decision-log-stream-max-bytes", "8589934592"}, args...)
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
	eventually(t, 30*time.Second, func() bool { return l.count() >= want },
		func() string {
			return fmt.Sprintf("only %d checks answered, want %d; errors: %v", l.count(), want, l.errs)
		})
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

// compareTrail fails unless every answered check has its record and the
// stream holds no record of a check nobody saw answered. A record written
// twice (a batch retried after its reply was lost: the sink contract
// allows it, decision_id tells the copies apart) is counted once.
func compareTrail(t *testing.T, answered []string, logged map[string]int) {
	t.Helper()
	lost, repeated := 0, 0
	for _, id := range answered {
		switch logged[id] {
		case 0:
			lost++
		case 1:
		default:
			repeated++
		}
	}
	t.Logf("checks answered %d, records in the stream %d (by decision id), lost %d, written twice %d", len(answered), len(logged), lost, repeated)
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

// waitLogged waits until the stream holds a record of every answered
// check, by decision id, and returns the records it read. Counting
// entries is not enough: a batch written twice (its reply lost when Redis
// died) adds entries, so the count can reach len(answered) while the
// last spooled batch is still on its way. It fails the test if the
// records are not all there within 30 s; compareTrail then tells which.
func waitLogged(t *testing.T, rs *redistest.Server, answered []string) map[string]int {
	t.Helper()
	c := rs.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := c.XLen(context.Background(), decisionlog.DefaultStream).Result()
		if err == nil && got >= int64(len(answered)) {
			logged := loggedIDs(t, rs)
			if missing(answered, logged) == 0 {
				return logged
			}
			if time.Now().After(deadline) {
				compareTrail(t, answered, logged)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the decisions stream holds %d records (%v), want %d", got, err, len(answered))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// missing counts the answered checks with no record in logged.
func missing(answered []string, logged map[string]int) int {
	n := 0
	for _, id := range answered {
		if logged[id] == 0 {
			n++
		}
	}
	return n
}

// persistent keeps what Redis acknowledged across its restart (with
// appendfsync always the AOF is written before a reply is sent; everysec
// may hold a write back past the kill), so the stream counts every record
// of the run, before and after the outage.
var persistent = []string{"--appendonly", "yes", "--appendfsync", "always"}

// TestRedisOutageUnderLoadLosesNoDecisionRecordWithSpool stops Redis for
// 10 s while clients keep checking a public route (decided without
// state): the records of the outage wait in the spool and reach the
// stream, in order, once Redis is back on the same port.
func TestRedisOutageUnderLoadLosesNoDecisionRecordWithSpool(t *testing.T) {
	rs := redistest.Start(t, persistent...)
	_, grpcAddr := startTrailDeputy(t, rs.Addr, "--decision-log-spool-dir", t.TempDir())
	load := startLoad(t, grpcAddr, 2, false)
	load.waitAnswered(t, 500)

	rs.Stop()
	before := load.count()
	time.Sleep(10 * time.Second) // the outage
	during := load.count() - before
	rs.Restart()
	load.waitAnswered(t, 500)
	answered, errs := load.finish()
	if len(errs) > 0 {
		t.Fatalf("%d checks failed, first: %v", len(errs), errs[0])
	}
	if during == 0 {
		t.Fatal("no check answered during the outage")
	}
	t.Logf("checks answered during the 10 s outage: %d", during)
	compareTrail(t, answered, waitLogged(t, rs, answered))
}

// TestSpooledDecisionsAreDeliveredAfterARestart: Deputy stops (SIGTERM)
// while Redis is down, keeping the records it could not write in its
// spool; started again on the same spool once Redis is back, it delivers
// them.
func TestSpooledDecisionsAreDeliveredAfterARestart(t *testing.T) {
	rs := redistest.Start(t, persistent...)
	spool := t.TempDir()
	p, grpcAddr := startTrailDeputy(t, rs.Addr, "--decision-log-spool-dir", spool)
	load := startLoad(t, grpcAddr, 2, true)
	load.waitAnswered(t, 200)
	rs.Stop()
	load.waitAnswered(t, 500) // logged while Redis is down
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("deputy exited %d after SIGTERM", code)
	}
	answered, _ := load.finish()
	segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
	if len(segs) == 0 {
		t.Fatal("nothing spooled while Redis was down")
	}

	rs.Restart()
	startTrailDeputy(t, rs.Addr, "--decision-log-spool-dir", spool)
	compareTrail(t, answered, waitLogged(t, rs, answered))
}
