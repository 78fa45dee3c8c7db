package examples_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// questionLookalikes are the characters Deputy reads as a redeem link's
// "?" (delegation.ExposedRedeemCodes): those whose compatibility form
// (NFKC) holds one, and the Arabic, reversed and emoji question marks.
var questionLookalikes = []string{
	"\uFF1F", // ？ fullwidth
	"\uFE56", // ﹖ small
	"\uFE16", // ︖ vertical presentation form
	"\u2047", // ⁇
	"\u2048", // ⁈
	"\u2049", // ⁉
	"\u061F", // ؟ Arabic
	"\u2E2E", // ⸮ reversed
	"\u2753", // ❓
	"\u2754", // ❔
}

// percentEncode writes each byte of s as esc followed by its two hex
// digits: esc "%" encodes once, "%25" twice.
func percentEncode(s, esc string, lower bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		h := fmt.Sprintf("%02X", s[i])
		if lower {
			h = strings.ToLower(h)
		}
		b.WriteString(esc + h)
	}
	return b.String()
}

// redeemLogSpelling is a request for a proxy to log.
type redeemLogSpelling struct {
	target string // as sent
	burned bool   // Deputy reads it as a redeem link whose "?" a tool respelled, and uses its code up
}

// redeemLogSpellings are the spellings of a redeem link, each with a code
// of its own beginning with SECRET-, that a proxy's log must not hold the
// code of: every look-alike of its "?" raw, percent-encoded once (in
// either case of hex digits), twice, and partly at one level and partly
// at another; the path in other letter cases, with a dot segment, with
// a letter Deputy reads in its compatibility form (ſ for s); and a code
// on the redeem path (in any letter case, as proxies route it) with no
// separator at all, which Deputy does not burn (it answers 404) but
// which is as valid. Each burned spelling is
// checked to be one Deputy burns.
func redeemLogSpellings(t *testing.T) []redeemLogSpelling {
	t.Helper()
	paths := []string{
		"/deputy/v1/impersonation/redeem",
		"/deputy/v1/Impersonation/Redeem",
		"/DEPUTY/V1/IMPERSONATION/REDEEM",
		"//deputy/v1/x/../Impersonation/redeem",
		"/deputy/v1/imper%C5%BFonation/redeem",
	}
	var marks []string
	for _, m := range questionLookalikes {
		marks = append(marks,
			m,
			percentEncode(m, "%", false),
			percentEncode(m, "%", true),
			percentEncode(m, "%25", false),
			m[:1]+percentEncode(m[1:], "%", false),
			percentEncode(m[:1], "%", false)+percentEncode(m[1:], "%25", true),
		)
	}
	marks = append(marks, "%3F", "%3f", "%253F", "%25253f")
	var out []redeemLogSpelling
	code := func() string {
		return fmt.Sprintf("SECRET-%036d", len(out)) // a redeem code's length, 43
	}
	for _, p := range paths {
		for _, m := range marks {
			target := p + m + "code=" + code()
			if _, ok := delegation.ExposedRedeemCodes(api.Prefix, target, ""); !ok {
				t.Fatalf("%s: Deputy does not burn this spelling", target)
			}
			out = append(out, redeemLogSpelling{target, true})
		}
		if strings.Contains(p, "%") {
			continue // not the redeem path but as Deputy reads it, whose "?" it needs
		}
		for _, sep := range []string{"/u003fcode=", "u003fcode=", "/", "code="} {
			out = append(out, redeemLogSpelling{p + sep + code(), false})
		}
	}
	return out
}

// A redeem link whose "?" a mail client, word processor or input method
// wrote as a look-alike (fullwidth ？, ﹖, ⁇, Arabic ؟, ⸮, ❓), raw or
// percent-encoded as UTF-8 at any level, on its path in any letter case,
// is one Deputy burns when it reaches it, but while Deputy is down or
// restarting its code is still valid: nginx must write it to neither its
// access log nor its error log, whether Deputy is up or unreachable. Nor
// a code on the redeem path with no separator. Ordinary paths (a product
// slug outside ASCII, an encoded search term) are logged as before.
func TestNginxLogsLeaveRespelledRedeemCodesOut(t *testing.T) {
	for _, up := range []bool{true, false} {
		t.Run(map[bool]string{true: "deputy up", false: "deputy down"}[up], func(t *testing.T) {
			d := &deputy{http: freeAddr(t)} // nothing listens: every proxied call fails
			if up {
				d = startDeputy(t, "nginx")
			}
			app := startUpstream(t)
			dir := t.TempDir()
			errorLog, accessLog := filepath.Join(dir, "error.log"), filepath.Join(dir, "access.log")
			base := startNginxWith(t, d, app, " error_log "+errorLog+" info; access_log "+accessLog+" deputy;")
			spellings := redeemLogSpellings(t)
			for i, s := range spellings {
				resp, body := callRaw(t, base, s.target, http.Header{"User-Agent": {fmt.Sprintf("spelling-%d", i)}})
				// Still Deputy's to burn, through every location it
				// reaches.
				if up && s.burned && (resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "ask for a new link")) {
					t.Errorf("%s: %d %s, want Deputy's 400 saying to ask for a new link", s.target, resp.StatusCode, body)
				}
			}
			if up {
				// An application path holding a look-alike is served as
				// any other: checked, and sent on with Deputy's answer
				// (TestNginxLogsOutagesOnPathsWithLookalikes: its errors
				// are logged). So is one holding "redeem" before it, which
				// comes to the location nested in / (errors not logged).
				resp, body := callRaw(t, base, "/catalog/shoes/%EF%BC%9F", nil)
				if seen := decodeSeen(t, resp, body); seen.Path != "/catalog/shoes/%EF%BC%9F" || seen.Headers.Get("X-Deputy-Decision-Id") == "" {
					t.Errorf("application path with a look-alike: the application saw %+v, want the path as sent and Deputy's decision id", seen)
				}
				resp, body = callRaw(t, base, "/catalog/redeem-offers/%EF%BC%9F", nil)
				if seen := decodeSeen(t, resp, body); seen.Path != "/catalog/redeem-offers/%EF%BC%9F" || seen.Headers.Get("X-Deputy-Decision-Id") == "" {
					t.Errorf("application path with redeem and a look-alike: the application saw %+v, want the path as sent and Deputy's decision id", seen)
				}
			}
			// Ordinary paths, logged as nginx decoded them (escaping
			// bytes outside ASCII).
			for target, line := range map[string]string{
				"/caf\xc3\xa9":          `"GET /caf\xC3\xA9 HTTP/1.1"`,
				"/caf%C3%A9":            `"GET /caf\xC3\xA9 HTTP/1.1"`,
				"/search/%E2%82%AC10":   `"GET /search/\xE2\x82\xAC10 HTTP/1.1"`,
				"/gift-cards/redeem/42": `"GET /gift-cards/redeem/42 HTTP/1.1"`,
			} {
				callRaw(t, base, target, http.Header{"User-Agent": {"ordinary"}})
				eventually(t, 5*time.Second, func() bool {
					return strings.Contains(readConfig(t, accessLog), line)
				}, func() string { return "access log lacks " + line + ":\n" + readConfig(t, accessLog) })
			}
			// A check Deputy refuses (a dot segment, 400) or cannot
			// answer: nginx logs the error in location /, request line
			// included. Errors are written before the answer.
			callRaw(t, base, "/catalog/./shoes?marker=LOGGED", nil)
			var logged string
			eventually(t, 5*time.Second, func() bool {
				logged = readConfig(t, accessLog)
				for i := range spellings {
					if !strings.Contains(logged, fmt.Sprintf(`"spelling-%d"`, i)) {
						return false
					}
				}
				return true
			}, func() string { return "access log lacks a request sent:\n" + logged })
			if leaks := linesWith(logged, "SECRET-"); leaks != "" {
				t.Errorf("access log holds redeem codes:\n%s", leaks)
			}
			eventually(t, 5*time.Second, func() bool {
				logged = readConfig(t, errorLog)
				return strings.Contains(logged, "marker=LOGGED")
			}, func() string { return "error log lacks the failed check:\n" + logged })
			if leaks := linesWith(logged, "SECRET-"); leaks != "" {
				t.Errorf("error log holds redeem codes:\n%s", leaks)
			}
		})
	}
}

// Caddy's own log (the error of a request it failed to serve, and with
// debug on each round trip to an upstream) and the access log the
// Caddyfile's comment shows hold no code of a respelled redeem link, nor
// of one with no separator: Caddy logs the URI as sent.
func TestCaddyLogsLeaveRespelledRedeemCodesOut(t *testing.T) {
	accessLog := accessLogExample(t)
	for _, c := range []struct {
		name   string
		up     bool
		pairs  []string
		logger func(rec caddyRecord) bool // a record each request writes
	}{
		{"deputy down", false, nil, func(r caddyRecord) bool { return r.Logger == "http.log.error" }},
		{"deputy up, debug", true, []string{"auto_https off", "auto_https off\n\tdebug"},
			func(r caddyRecord) bool { return r.Msg == "upstream roundtrip" }},
		{"deputy up, access log", true, []string{"\thandle /deputy/authz {", accessLog + "\n\thandle /deputy/authz {"},
			func(r caddyRecord) bool { return strings.HasPrefix(r.Logger, "http.log.access") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &deputy{http: freeAddr(t)}
			if c.up {
				d = startDeputy(t, "caddy")
			}
			app := startUpstream(t)
			base, caddy := startCaddySite(t, d, app, false, c.pairs...)
			spellings := redeemLogSpellings(t)
			for _, s := range spellings {
				callRaw(t, base, s.target, nil)
			}
			ordinary := []string{"/caf%C3%A9", "/search/%E2%82%AC10", "/gift-cards/redeem/42"}
			for _, target := range ordinary {
				callRaw(t, base, target, nil)
			}
			var out string
			eventually(t, 5*time.Second, func() bool {
				out = caddy.out.String()
				n := 0
				for line := range strings.Lines(out) {
					var rec caddyRecord
					if json.Unmarshal([]byte(line), &rec) == nil && c.logger(rec) {
						n++
					}
				}
				return n >= len(spellings)+len(ordinary)
			}, func() string { return "Caddy did not log each request:\n" + caddy.out.String() })
			if leaks := linesWith(out, "SECRET-"); leaks != "" {
				t.Errorf("Caddy's log holds redeem codes:\n%s", leaks)
			}
			if !c.up {
				var uris []string
				for line := range strings.Lines(out) {
					var rec caddyRecord
					if json.Unmarshal([]byte(line), &rec) == nil && c.logger(rec) {
						uris = append(uris, rec.Request.URI)
					}
				}
				for _, target := range ordinary {
					if !slices.Contains(uris, target) {
						t.Errorf("Caddy logged no error for %s as sent; logged %q", target, uris)
					}
				}
			}
		})
	}
}

type caddyRecord struct {
	Logger  string `json:"logger"`
	Msg     string `json:"msg"`
	Request struct {
		URI string `json:"uri"`
	} `json:"request"`
}

// accessLogExample is the access log the Caddyfile shows in a comment,
// uncommented, for a site block.
func accessLogExample(t *testing.T) string {
	t.Helper()
	var block []string
	for line := range strings.Lines(readConfig(t, "caddy/Caddyfile")) {
		line = strings.TrimRight(line, "\n")
		if len(block) == 0 && line != "#   log {" {
			continue
		}
		block = append(block, "\t"+strings.TrimPrefix(line, "#   "))
		if line == "#   }" {
			return strings.Join(block, "\n")
		}
	}
	t.Fatal("Caddyfile shows no access log (#   log { ... #   })")
	return ""
}

// linesWith is the lines of log holding s.
func linesWith(log, s string) string {
	var b strings.Builder
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// The nginx config writes its pattern of "?" spellings three times (the
// access log's map and the locations whose errors are not logged), and
// the Caddyfile its filter twice (Caddy's own log and the access log it
// shows): each copy is the same, so the e2e tests above, which reach
// each, hold for all.
func TestRedeemLogPatternsAgree(t *testing.T) {
	nginx := readConfig(t, "nginx/nginx.conf")
	m := regexp.MustCompile(`"~\*\^\(\.\*\?\)\(\?:(.*)\)"\s+\$1;`).FindStringSubmatch(nginx)
	if m == nil {
		t.Fatal("nginx.conf: no map entry cutting $uri at a spelling of \"?\"")
	}
	for _, c := range []struct{ where, loc string }{
		{"/deputy/v1/", `location ~* "^/deputy/v1/impersonation/redeem|` + m[1] + `" {`},
		// Only where "redeem" (the first one) comes before the spelling.
		{"/", `location ~* "^/deputy/v1/impersonation/redeem|^(?>(?s:.*?)redeem)(?s:.*?)(?:` + m[1] + `)" {`},
	} {
		if n := strings.Count(nginx, c.loc); n != 1 {
			t.Errorf("nginx.conf: %d locations %s, want 1 (nested in %s)", n, c.loc, c.where)
		}
	}
	caddy := readConfig(t, "caddy/Caddyfile")
	filters := regexp.MustCompile(`request>uri regexp (\S+) \$1`).FindAllStringSubmatch(caddy, -1)
	if len(filters) != 2 || filters[0][1] != filters[1][1] {
		t.Errorf("Caddyfile: URI filters %q, want the same one twice (log default and the access log shown)", filters)
	}
}

// An outage (the application down, or Deputy) is written to nginx's
// error log for an ordinary application path holding a look-alike of
// "?", as for any other path: such characters are ordinary in Japanese,
// Chinese and Arabic title slugs and in marketing ones. Only a path
// holding "redeem" before one (a redeem link Deputy would burn always
// does, on its way to location /) is kept out of the error log.
func TestNginxLogsOutagesOnPathsWithLookalikes(t *testing.T) {
	targets := []string{
		"/blog/%E3%81%AA%E3%81%9C%EF%BC%9F",  // なぜ？
		"/ar/%D9%85%D8%A7%D8%B0%D8%A7%D8%9F", // ماذا؟
		"/catalog/shoes/%E2%9D%93",           // ❓
		"/catalog/shoes/%E2%81%89-deal",      // ⁉
		"/catalog/shoes",                     // no look-alike
	}
	for _, c := range []struct {
		name, outage string
		deputyUp     bool
	}{
		{"app down", "connect() failed", true},
		{"deputy down", "auth request unexpected status", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &deputy{http: freeAddr(t)} // nothing listens: every check fails
			if c.deputyUp {
				// A site whose blog is public: Deputy allows every path.
				dir := policyDir(t, "permissive", "package permissive\n\ndecision := {\"allowed\": true, \"reason\": \"permissive\"}\n")
				d = startDeputyWith(t, "nginx", dir, "data.permissive.decision")
			}
			app := startUpstream(t)
			if c.deputyUp {
				app.Close() // the application is down
			}
			errorLog := filepath.Join(t.TempDir(), "error.log")
			base := startNginxWith(t, d, app, " error_log "+errorLog+" info;")
			for _, target := range targets {
				if resp, body := callRaw(t, base, target, nil); resp.StatusCode < 500 {
					t.Fatalf("%s: %d %s, want an outage's 5xx", target, resp.StatusCode, body)
				}
			}
			// Errors are written before the answer: the log is complete.
			logged := readConfig(t, errorLog)
			for _, target := range targets {
				found := false
				for line := range strings.Lines(logged) {
					if strings.Contains(line, c.outage) && strings.Contains(line, `request: "GET `+target+` HTTP/1.1"`) {
						found = true
					}
				}
				if !found {
					t.Errorf("error log lacks %q for %s:\n%s", c.outage, target, logged)
				}
			}
		})
	}
}
