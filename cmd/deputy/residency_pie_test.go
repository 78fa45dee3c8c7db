package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/logtest"
)

// A position-independent build (distribution packages, hardened images)
// has the loader relocate its RELRO (type descriptors, itabs) and then
// make it read-only: those pages are private copies, and releasing them
// would put the file's unrelocated pointers back. Deputy built so starts,
// releases its start-up pages and shuts down cleanly.
func TestServeStartsAsPIE(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "deputy-pie")
	build := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-buildmode=pie", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--dev", "--policy-paths", policies,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	cmd.Dir = t.TempDir() // dev mode keeps its generated keys there
	out := &logtest.Lines{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// "deputy serving" is logged once the listeners are up; serve releases
	// the pages right after, whatever signal arrives meanwhile, then runs
	// until SIGTERM ends it with status 0. A crash in between exits on
	// SIGSEGV.
	deadline := time.After(time.Minute)
	for !strings.Contains(out.String(), "deputy serving") {
		select {
		case err := <-done:
			t.Fatalf("deputy built as PIE exited during start-up: %v\n%.3000s", err, out.String())
		case <-deadline:
			t.Fatalf("deputy built as PIE did not start within a minute:\n%.3000s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deputy built as PIE: %v\n%.3000s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("deputy built as PIE did not stop within a minute of SIGTERM:\n%.3000s", out.String())
	}
}
