package examples_test

import (
	"encoding/json"
	"fmt"
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
		// $uri is decoded: a "?" a client sent encoded (%3F) is one there.
		leaks := regexp.MustCompile(`\$(request|request_uri|uri|args|query_string|arg_\w+|http_referer)\b`)
		if !regexp.MustCompile(`map \$uri \$deputy_log_uri \{`).MatchString(conf) {
			t.Error("no map $uri $deputy_log_uri: the logged path is not cut at a decoded \"?\"")
		}
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
			if !strings.Contains(format, "$deputy_log_uri") {
				t.Errorf("log_format %s does not write the path ($deputy_log_uri)", args[1])
			}
		}
	})
	t.Run("caddy", func(t *testing.T) {
		for _, line := range strings.Split(readConfig(t, "caddy/Caddyfile"), "\n") {
			// The default logger (global options) is Caddy's own log,
			// filtered (TestCaddyErrorLogLeavesSecretsOut); a log in a
			// site block is an access log.
			if f := strings.Fields(line); len(f) > 0 && f[0] == "log" && !(len(f) == 3 && f[1] == "default" && f[2] == "{") {
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
// a session parameter never reach its access log, the path does. A mail or
// chat client may percent-encode a link's "?": nginx decodes the path
// ($uri) it would log, so the format cuts it at the first "?", and at an
// encoded one left by a link encoded twice. Deputy answers such a link 404
// without using the code up.
func TestNginxAccessLogLeavesQueryOut(t *testing.T) {
	d := startDeputy(t, "nginx")
	app := startUpstream(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	base := startNginxWith(t, d, app, " access_log "+logFile+" deputy;")
	requests := []struct{ target, line string }{
		{"/deputy/v1/impersonation/redeem?code=SECRET-CODE", `"GET /deputy/v1/impersonation/redeem HTTP/1.1"`},
		{"/deputy/v1/impersonation/redeem%3Fcode=SECRET-ENCODED-CODE", `"GET /deputy/v1/impersonation/redeem HTTP/1.1"`},
		{"/deputy/v1/impersonation/redeem%3fcode%3dSECRET-LOWER-CODE", `"GET /deputy/v1/impersonation/redeem HTTP/1.1"`},
		{"/deputy/v1/impersonation/redeem%253Fcode=SECRET-TWICE-CODE", `"GET /deputy/v1/impersonation/redeem HTTP/1.1"`},
		{"/deputy/v1/impersonation/redeem%25253Fcode=SECRET-THRICE-CODE", `"GET /deputy/v1/impersonation/redeem HTTP/1.1"`},
		{"/catalog/shoes?page=2&session=SECRET-SESSION", `"GET /catalog/shoes HTTP/1.1"`},
		{"/catalog/shoes/%3Fsession=SECRET-ENCODED-SESSION", `"GET /catalog/shoes/ HTTP/1.1"`},
	}
	for _, r := range requests {
		callRaw(t, base, r.target, nil)
	}
	// nginx writes a request's line once it has finalised the request,
	// which may be after the client read the answer, and the log holds
	// other lines too (the harness's own requests): wait, bounded, for
	// the line of each request sent before reading what they say.
	var logged string
	eventually(t, 5*time.Second, func() bool {
		logged = readConfig(t, logFile)
		return loggedEach(logged, requests)
	}, func() string { return "access log lacks the line of a request sent:\n" + logged })
	if strings.Contains(logged, "SECRET-") {
		t.Errorf("access log holds a query:\n%s", logged)
	}
}

// loggedEach reports whether log holds, for each request, a line holding
// its line: as many lines holding a given text as requests expecting it.
func loggedEach(log string, requests []struct{ target, line string }) bool {
	want := map[string]int{}
	for _, r := range requests {
		want[r.line]++
	}
	for line, n := range want {
		if strings.Count(log, line) < n {
			return false
		}
	}
	return true
}

// nginx's error log writes the request line of every request it logs an
// error for, query included, and no format changes that: with Deputy
// unreachable, a redeem link's code would be written there while it is
// still valid. The shipped config logs no errors for the redeem path, in
// every spelling that reaches it and in those beside it: nginx matches
// locations on the path it normalized, so //, dot segments and escapes
// reach the redeem location; a trailing "/", a ";param" or an escaped "?"
// or "/" do not, and Deputy answers them 404, but a code sent on them is
// as valid. The rest of the management API still logs its errors (so the
// line this test waits for is written, and the log is read only once
// nginx wrote).
func TestNginxErrorLogLeavesRedeemCodeOut(t *testing.T) {
	down := &deputy{http: freeAddr(t)} // nothing listens: every proxied call fails
	app := startUpstream(t)
	dir := t.TempDir()
	logFile, accessLog := filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log")
	base := startNginxWith(t, down, app, " error_log "+logFile+" info; access_log "+accessLog+" deputy;")
	targets := []string{
		"/deputy/v1/impersonation/redeem?code=SECRET-CODE",
		"//deputy/v1/impersonation/redeem?code=SECRET-SLASHES",
		"/deputy/v1/impersonation//redeem?code=SECRET-INNER-SLASHES",
		"/deputy/v1/x/../impersonation/redeem?code=SECRET-DOTS",
		"/deputy/v1/impersonation/%72edeem?code=SECRET-ESCAPED",
		"/deputy/v1/impersonation/redeem/?code=SECRET-TRAILING",
		"/deputy/v1/impersonation/redeem;x?code=SECRET-PARAM",
		"/deputy/v1/impersonation/redeem%2F?code=SECRET-ESCAPED-SLASH",
		"/deputy/v1/impersonation/redeem%3Fcode=SECRET-IN-PATH",
		"/deputy/v1/impersonation/redeem%3fcode%3dSECRET-LOWER-IN-PATH",
		"/deputy/v1/impersonation/redeem%253Fcode=SECRET-TWICE-IN-PATH",
		"/deputy/v1/impersonation/sessions?marker=LOGGED",
	}
	for _, target := range targets {
		resp, _ := callRaw(t, base, target, nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("GET %s with Deputy down: %d, want 502", target, resp.StatusCode)
		}
	}
	var logged string
	eventually(t, 5*time.Second, func() bool {
		logged = readConfig(t, logFile)
		return strings.Contains(logged, "marker=LOGGED")
	}, func() string { return "error log lacks the failed management call:\n" + logged })
	if strings.Contains(logged, "SECRET-") {
		t.Errorf("error log holds a redeem code:\n%s", logged)
	}
	// The access log records each of these requests, with no code in
	// the path it writes ($uri decoded "%3F" to "?").
	eventually(t, 5*time.Second, func() bool {
		logged = readConfig(t, accessLog)
		return strings.Count(logged, `" 502 `) >= len(targets)
	}, func() string { return "access log lacks a failed request:\n" + logged })
	if strings.Contains(logged, "SECRET-") {
		t.Errorf("access log holds a redeem code:\n%s", logged)
	}
}

// Caddy logs every request it fails to serve (logger http.log.error) with
// the request: its URI, query included, and its headers, of which Caddy
// redacts only Cookie, Set-Cookie, Authorization and Proxy-Authorization.
// With Deputy unreachable (a restart, a crash), a redeem link's code, a
// token in the query and one in a header of the application's own would
// be written there, still valid. The shipped Caddyfile filters every log
// Caddy writes: the error is still logged, with the path, and no secret.
// With debug on, reverse_proxy also logs each round trip to an upstream,
// with the request it sent and the response's headers (Deputy's answer
// carries the actor token): the filter holds for those too.
func TestCaddyErrorLogLeavesSecretsOut(t *testing.T) {
	for _, debug := range []bool{false, true} {
		t.Run(map[bool]string{false: "shipped", true: "debug"}[debug], func(t *testing.T) {
			down := &deputy{http: freeAddr(t)} // nothing listens: every call to Deputy fails
			app := startUpstream(t)
			var pairs []string
			if debug {
				pairs = []string{"auto_https off", "auto_https off\n\tdebug"}
			}
			base, caddy := startCaddySite(t, down, app, false, pairs...)
			secrets := http.Header{
				"X-Api-Key":     {"SECRET-API-KEY"},
				"X-Auth-Token":  {"SECRET-AUTH-TOKEN"},
				"Authorization": {"Bearer SECRET-BEARER"},
				"Cookie":        {"deputy_session=SECRET-SESSION"},
			}
			// A mail or chat client may percent-encode a link's "?": Caddy
			// logs the URI as sent, so the filter cuts at an encoded "?"
			// too (Deputy answers such a link 404 without using the code
			// up). Each request's logged path, the cut URI.
			requests := []struct{ target, path string }{
				{"/deputy/v1/impersonation/redeem?code=SECRET-CODE", "/deputy/v1/impersonation/redeem"},
				{"/deputy/v1/impersonation/redeem%3Fcode=SECRET-ENCODED-CODE", "/deputy/v1/impersonation/redeem"},
				{"/deputy/v1/impersonation/redeem%3fcode%3dSECRET-LOWER-CODE", "/deputy/v1/impersonation/redeem"},
				{"/deputy/v1/impersonation/redeem%253Fcode=SECRET-TWICE-CODE", "/deputy/v1/impersonation/redeem"},
				{"/catalog/shoes?page=2&access_token=SECRET-QUERY-TOKEN", "/catalog/shoes"},
				{"/catalog/shoes/%3Faccess_token=SECRET-ENCODED-TOKEN", "/catalog/shoes/"},
			}
			want := map[string]int{}
			for _, r := range requests {
				resp, _ := callRaw(t, base, r.target, secrets)
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("GET %s with Deputy down: %d, want 502", r.target, resp.StatusCode)
				}
				want[r.path]++
			}
			// Caddy writes the error after answering: wait, bounded, for
			// the error of each request before reading the whole log.
			logged := func() map[string]int {
				seen := map[string]int{}
				for line := range strings.Lines(caddy.out.String()) {
					var rec struct {
						Logger  string `json:"logger"`
						Request struct {
							URI string `json:"uri"`
						} `json:"request"`
					}
					if json.Unmarshal([]byte(line), &rec) == nil && rec.Logger == "http.log.error" {
						seen[rec.Request.URI]++
					}
				}
				return seen
			}
			eventually(t, 5*time.Second, func() bool {
				seen := logged()
				for path, n := range want {
					if seen[path] < n {
						return false
					}
				}
				return true
			}, func() string {
				return fmt.Sprintf("Caddy did not log, by path, the errors %v for requests Deputy could not decide:\n%s", want, caddy.out.String())
			})
			out := caddy.out.String()
			if debug && !strings.Contains(out, `"msg":"upstream roundtrip"`) {
				t.Error("debug on, but Caddy logged no round trip to Deputy:\n" + out)
			}
			if strings.Contains(out, "SECRET-") {
				var leaks []string
				for line := range strings.Lines(out) {
					if strings.Contains(line, "SECRET-") {
						leaks = append(leaks, line)
					}
				}
				t.Errorf("Caddy's log holds a secret:\n%s", strings.Join(leaks, ""))
			}
		})
	}
}

// nginx's error log writes the request line, query included, of a request
// whose check failed: Deputy unreachable, or answering auth_request with a
// status other than 2xx, 401 or 403 (a 400 malformed_request, a 503 while
// Redis is down). A bearer token a client puts in the query
// (?access_token=...) is then written there, and no format removes it. As
// shipped, location / logs these errors, so an outage shows; docs/deploy.md
// gives the options, of which this test holds the one nginx itself offers:
// error_log at crit in location / writes neither line (the main request's
// location decides, the check's subrequest included), while the access
// log still records each request's status, without its query.
func TestNginxErrorLogOfFailedChecks(t *testing.T) {
	for _, crit := range []bool{false, true} {
		t.Run(map[bool]string{false: "shipped", true: "crit"}[crit], func(t *testing.T) {
			d := startDeputy(t, "nginx")
			app := startUpstream(t)
			dir := t.TempDir()
			errorLog, accessLog := filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log")
			var pairs []string
			if crit {
				pairs = []string{"auth_request /_deputy/check;", "auth_request /_deputy/check;\n            error_log " + errorLog + " crit;"}
			}
			base := startNginxRewritten(t, d, app, []string{" error_log " + errorLog + " info; access_log " + accessLog + " deputy;"}, pairs...)
			// A dot segment: Deputy refuses the request as malformed (400).
			if resp, _ := callRaw(t, base, "/catalog/./shoes?access_token=SECRET-REFUSED", nil); resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("dot segment: %d, want Deputy's 400", resp.StatusCode)
			}
			d.stop(t)
			if resp, _ := callRaw(t, base, "/catalog/shoes?access_token=SECRET-UNDECIDED", nil); resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("Deputy down: %d, want 503", resp.StatusCode)
			}
			// $uri is the normalized path.
			wants := []string{`"GET /catalog/shoes HTTP/1.1" 400`, `"GET /catalog/shoes HTTP/1.1" 503`}
			var logged string
			eventually(t, 5*time.Second, func() bool {
				logged = readConfig(t, accessLog)
				return strings.Contains(logged, wants[0]) && strings.Contains(logged, wants[1])
			}, func() string { return "access log lacks a line of " + strings.Join(wants, " or ") + ":\n" + logged })
			errors := readConfig(t, errorLog)
			if !crit {
				// Written before the access log line of the same request.
				for _, want := range []string{"auth request unexpected status: 400", "connect() failed"} {
					if !strings.Contains(errors, want) {
						t.Errorf("error log lacks %q:\n%s", want, errors)
					}
				}
				return
			}
			if strings.Contains(errors, "SECRET-") {
				t.Errorf("error log holds a query token:\n%s", errors)
			}
		})
	}
}
