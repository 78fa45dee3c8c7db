package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadInProcess(t *testing.T) {
	out := `goos: linux
BenchmarkCheckFloor-2       	     300	     10052 ns/op	    3576 B/op	      49 allocs/op
BenchmarkCheckFloor-2       	     300	      8459 ns/op	    3576 B/op	      49 allocs/op
BenchmarkCheckFloor-2       	     300	      9000 ns/op	    3576 B/op	      51 allocs/op
BenchmarkCheck/public-2     	     300	     20000.5 ns/op	    9925 B/op	     198 allocs/op
BenchmarkCheckDelegated/reseller     	     300	     45273 ns/op
PASS
`
	path := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readInProcess(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]benchFigure{
		"BenchmarkCheckFloor":              {ns: 9000, allocs: 49},
		"BenchmarkCheck/public":            {ns: 20000.5, allocs: 198},
		"BenchmarkCheckDelegated/reseller": {ns: 45273},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s = %+v, want %+v", n, got[n], w)
		}
	}
}

// cpuTime reads this process's own CPU time, which grows as it works.
func TestCPUTime(t *testing.T) {
	pid := os.Getpid()
	before, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		for range 1_000_000 {
			x++
		}
		after, err := cpuTime(pid)
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			if rss, err := rssBytes(pid); err != nil || rss.total <= 0 || rss.anon <= 0 || rss.file <= 0 || rss.anon+rss.file > rss.total {
				t.Fatalf("rss = %+v, %v; want a total, and anonymous and file-backed parts within it", rss, err)
			}
			return
		}
	}
	t.Fatalf("CPU time stayed at %v over 10s of work (%d loops)", before, x)
}

func TestProfileName(t *testing.T) {
	for in, want := range map[string]string{
		"deputy public page":                             "deputy-public-page.pprof",
		"deputy, OPA-Envoy-style JWT decode + headers":   "deputy-opa-envoy-style-jwt-decode-headers.pprof",
		"deputy impersonation, Redis, decision log none": "deputy-impersonation-redis-decision-log-none.pprof",
	} {
		if got := profileName(in); got != want {
			t.Errorf("profileName(%q) = %q, want %q", in, got, want)
		}
	}
}
