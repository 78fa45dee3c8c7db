package main

import (
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestPprofIsOffByDefault(t *testing.T) {
	if addr := defaultConfig().Pprof.Addr; addr != "" {
		t.Fatalf("pprof.addr defaults to %q, want off", addr)
	}
	cfg := startServer(t, func(*Config) {})
	for _, addr := range []string{cfg.Metrics.Addr, cfg.HTTP.Addr} {
		if code, body := get(t, "http://"+addr+"/debug/pprof/"); code == http.StatusOK || strings.Contains(body, "goroutine") {
			t.Errorf("%s serves profiles by default: %d %.80q", addr, code, body)
		}
	}
}

func TestPprofServesProfilesOnItsOwnAddress(t *testing.T) {
	pprofAddr := freePort(t)
	cfg := startServer(t, func(c *Config) { c.Pprof.Addr = pprofAddr })
	waitListening(t, pprofAddr)
	code, body := get(t, "http://"+pprofAddr+"/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") || !strings.Contains(body, "heap") {
		t.Fatalf("/debug/pprof/ = %d %.200q, want the profile index", code, body)
	}
	code, body = get(t, "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("goroutine profile = %d %.200q", code, body)
	}
	// Still only there: the metrics listener stays as it was.
	if code, _ := get(t, "http://"+cfg.Metrics.Addr+"/debug/pprof/"); code == http.StatusOK {
		t.Errorf("metrics listener serves profiles too")
	}
}

func TestPprofAddrMustBeLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{"0.0.0.0:6060", false},
		{":6060", false},
		{"10.0.0.7:6060", false},
		{"[::]:6060", false},
		{"pprof.example.com:6060", false},
		{"127.0.0.1", false},
		{"127.0.0.1:http", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			_, err := loadWith(t, []string{"--pprof-addr", tc.addr}, nil, "")
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "pprof.addr" {
				t.Fatalf("error %v (field %q), want field pprof.addr", err, sidecar.ErrorField(err))
			}
		})
	}
}

// Heap profiling keeps its samples for the life of the process; it runs
// only where the pprof listener can serve them, or where GODEBUG asks.
func TestHeapProfilingOnlyWithPprof(t *testing.T) {
	defer func(rate, gc int) {
		runtime.MemProfileRate = rate
		debug.SetGCPercent(gc)
	}(runtime.MemProfileRate, debug.SetGCPercent(-1))
	const goDefault = 512 * 1024
	for _, tc := range []struct {
		name, pprof, godebug string
		want                 int
	}{
		{"off", "", "", 0},
		{"pprof listener", "127.0.0.1:6060", "", goDefault},
		{"GODEBUG", "", "memprofilerate=1", goDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GODEBUG", tc.godebug)
			runtime.MemProfileRate = goDefault
			tuneRuntime(&Config{GCPercent: DefaultGCPercent, Pprof: PprofConfig{Addr: tc.pprof}})
			if runtime.MemProfileRate != tc.want {
				t.Errorf("MemProfileRate = %d, want %d", runtime.MemProfileRate, tc.want)
			}
		})
	}
}
