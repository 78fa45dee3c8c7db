package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/porttest"
)

// The stdout decision log writes to whatever reads Deputy's standard
// output: a log shipper, tee, journald. When that reader goes away, a
// write to the pipe fails with EPIPE, and the Go runtime ends a program
// that writes to a broken pipe on fd 1 or 2 with SIGPIPE unless it asked
// for the signal: the next batch of records killed the sidecar (exit 141),
// with every queued record, audit entry and event, and every later check
// failed until a restart. A decision-log failure never changes the
// decision: Deputy goes on deciding and counts the sink's errors.
func TestServeOutlivesItsStdoutReader(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "deputy")
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, metricsAddr := porttest.Free(t), porttest.Free(t)
	cmd := exec.Command(bin, "serve", "--dev", "--policy-paths", policies,
		"--grpc-addr", porttest.Free(t), "--http-addr", httpAddr, "--metrics-addr", metricsAddr)
	cmd.Dir = t.TempDir()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errs := &logtest.Lines{}
	cmd.Stdout, cmd.Stderr = stdoutW, errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdoutW.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.After(time.Minute)
	for {
		if code, _ := get("http://" + metricsAddr + "/readyz"); code == http.StatusOK {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("deputy exited during start-up: %v\n%.3000s", err, errs.String())
		case <-deadline:
			t.Fatalf("deputy was not ready within a minute:\n%.3000s", errs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The reader goes away: every write to stdout from now on is EPIPE.
	stdoutR.Close()
	sinkErrors := func() bool {
		_, m := get("http://" + metricsAddr + "/metrics")
		for line := range strings.Lines(m) {
			if strings.HasPrefix(line, "deputy_decision_log_sink_errors_total ") && strings.TrimSpace(strings.TrimPrefix(line, "deputy_decision_log_sink_errors_total ")) != "0" {
				return true
			}
		}
		return false
	}
	deadline = time.After(time.Minute)
	for !sinkErrors() {
		if code, body := get("http://" + httpAddr + "/catalog/shoes"); code != http.StatusOK {
			t.Fatalf("a public page answered %d (%s) once stdout's reader was gone:\n%.3000s", code, body, errs.String())
		}
		select {
		case err := <-done:
			t.Fatalf("deputy exited once stdout's reader was gone: %v\n%.3000s", err, errs.String())
		case <-deadline:
			t.Fatalf("no decision-log sink error counted within a minute of stdout's reader going:\n%.3000s", errs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Still deciding, and still running after the failing writes.
	for range 5 {
		if code, body := get("http://" + httpAddr + "/catalog/shoes"); code != http.StatusOK {
			t.Fatalf("a public page answered %d (%s) after the sink failed:\n%.3000s", code, body, errs.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("deputy ended on %v, not by its own shutdown (%v):\n%.3000s", ws.Signal(), err, errs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("deputy did not stop within a minute of SIGTERM:\n%.3000s", errs.String())
	}
}
