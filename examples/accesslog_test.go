package examples_test

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Single-use redeem codes travel in a query string
// (/deputy/v1/impersonation/redeem?code=...): no shipped proxy's access
// log writes one. nginx's default format writes $request, the request
// line as sent, so the config names a format of its own for every access
// log; Caddy writes no access log unless told to. (The Envoy configs are
// checked by envoycheck.AccessLogsWithoutQuery.)
func TestAccessLogsLeaveQueryOut(t *testing.T) {
	t.Run("nginx", func(t *testing.T) {
		conf := readConfig(t, "nginx/nginx.conf")
		formats := map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^\s*log_format\s+(\S+)\s+([^;]*);`).FindAllStringSubmatch(conf, -1) {
			formats[m[1]] = m[2]
		}
		logs := regexp.MustCompile(`(?m)^\s*access_log\s+([^;]*);`).FindAllStringSubmatch(conf, -1)
		if len(logs) == 0 {
			t.Fatal("no access_log: nginx logs in the default format, query included")
		}
		leaks := regexp.MustCompile(`\$(request|request_uri|args|query_string|arg_\w+|http_referer)\b`)
		for _, l := range logs {
			args := strings.Fields(l[1])
			if args[0] == "off" {
				continue
			}
			if len(args) < 2 {
				t.Errorf("access_log %s: no format named, so the default (combined) writes the query", l[1])
				continue
			}
			format, ok := formats[args[1]]
			if !ok {
				t.Errorf("access_log %s: format %s is not defined here", l[1], args[1])
				continue
			}
			if v := leaks.FindString(format); v != "" {
				t.Errorf("log_format %s writes %s, which may hold the query", args[1], v)
			}
			if !strings.Contains(format, "$uri") {
				t.Errorf("log_format %s does not write the path ($uri)", args[1])
			}
		}
	})
	t.Run("caddy", func(t *testing.T) {
		for _, line := range strings.Split(readConfig(t, "caddy/Caddyfile"), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "log" {
				t.Errorf("Caddyfile enables a log (%q): Caddy's access log writes the URI with its query", strings.TrimSpace(line))
			}
		}
	})
}

func readConfig(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A real nginx writes the shipped deputy format: a redeem link's code and
// a session parameter never reach its access log, the path does.
func TestNginxAccessLogLeavesQueryOut(t *testing.T) {
	d := startDeputy(t, "nginx")
	app := startUpstream(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	base := startNginxWith(t, d, app, " access_log "+logFile+" deputy;")
	for _, path := range []string{"/deputy/v1/impersonation/redeem?code=SECRET-CODE", "/catalog/shoes?page=2&session=SECRET-SESSION"} {
		resp, _ := call(t, http.MethodGet, base+path, nil, nil)
		resp.Body.Close()
	}
	// nginx writes a request's line once it has finalised the request,
	// which may be after the client read the answer, and the log holds
	// other lines too (the harness's own requests): wait, bounded, for
	// the line of each request sent before reading what they say.
	wants := []string{`"GET /deputy/v1/impersonation/redeem HTTP/1.1"`, `"GET /catalog/shoes HTTP/1.1"`}
	var logged string
	eventually(t, 5*time.Second, func() bool {
		logged = readConfig(t, logFile)
		return strings.Contains(logged, wants[0]) && strings.Contains(logged, wants[1])
	}, func() string { return "access log lacks a line of " + strings.Join(wants, " or ") + ":\n" + logged })
	if strings.Contains(logged, "SECRET-") {
		t.Errorf("access log holds a query:\n%s", logged)
	}
}

// nginx's error log writes the request line of every request it logs an
// error for, query included, and no format changes that: with Deputy
// unreachable, a redeem link's code would be written there while it is
// still valid. The shipped config logs no errors for the redeem path; the
// rest of the management API still logs its errors (so the line this test
// waits for is written, and the log is read only once nginx wrote).
func TestNginxErrorLogLeavesRedeemCodeOut(t *testing.T) {
	down := &deputy{http: freeAddr(t)} // nothing listens: every proxied call fails
	app := startUpstream(t)
	logFile := filepath.Join(t.TempDir(), "error.log")
	base := startNginxWith(t, down, app, " error_log "+logFile+" info;")
	for _, path := range []string{"/deputy/v1/impersonation/redeem?code=SECRET-CODE", "/deputy/v1/impersonation/sessions?marker=LOGGED"} {
		resp, _ := call(t, http.MethodGet, base+path, nil, nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("GET %s with Deputy down: %d, want 502", path, resp.StatusCode)
		}
	}
	var logged string
	eventually(t, 5*time.Second, func() bool {
		logged = readConfig(t, logFile)
		return strings.Contains(logged, "marker=LOGGED")
	}, func() string { return "error log lacks the failed management call:\n" + logged })
	if strings.Contains(logged, "SECRET-CODE") {
		t.Errorf("error log holds the redeem code:\n%s", logged)
	}
}
