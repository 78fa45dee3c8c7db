package examples_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/deputyhq/deputy/examples/envoycheck"
)

// A proxy in front of the application, configured from the shipped file.
type proxy struct {
	name  string
	start func(t *testing.T, d *deputy, app *upstream) string
}

var proxies = []proxy{
	{name: "nginx", start: startNginx},
	{name: "caddy", start: startCaddy},
}

// injected are the headers Deputy sets upstream; the proxies replace each.
var injected = []string{
	"X-Deputy-Subject", "X-Deputy-Actor", "X-Deputy-Mode", "X-Deputy-Level", "X-Deputy-Session",
	"X-Deputy-Store-View", "X-Deputy-Subject-Name", "X-Deputy-Token",
}

// forgedOwned are owned header names Deputy never sets, in every case and
// separator variant.
var forgedOwned = []string{
	"X-Deputy-Other", "x-deputy-role", "X-DEPUTY-ROLE", "X-Deputy-Decision-Id",
	"x_deputy_subject", "X_Deputy_Actor", "X-Deputy_Level", "x_deputy-mode", "X_DEPUTY_TOKEN",
}

// owned is Deputy's rule: lower case, "_" read as "-", under x-deputy-.
func owned(name string) bool {
	return strings.HasPrefix(strings.ReplaceAll(strings.ToLower(name), "_", "-"), "x-deputy-")
}

func TestThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)

			t.Run("public route reaches the application", func(t *testing.T) {
				h := http.Header{"Cache-Control": {"max-age=0"}}
				resp, body := call(t, "GET", base+"/catalog/shoes?size=42", h, nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				s := decodeSeen(t, resp, body)
				if s.Path != "/catalog/shoes?size=42" || s.Method != "GET" {
					t.Errorf("application saw %s %s", s.Method, s.Path)
				}
				// Outside impersonation, caching is the application's business.
				if got := s.Headers.Get("Cache-Control"); got != "max-age=0" {
					t.Errorf("application received Cache-Control %q, want the client's", got)
				}
				if got := resp.Header.Values("Cache-Control"); len(got) != 1 || got[0] != appCacheControl {
					t.Errorf("client received Cache-Control %q, want the application's", got)
				}
			})

			t.Run("protected route gets Deputy's denial", func(t *testing.T) {
				before, decided := app.count(), d.decisions(t)
				resp, body := call(t, "GET", base+"/customer/account", nil, nil)
				if n := d.decisions(t) - decided; n != 1 {
					t.Errorf("the denial cost %v checks, want 1", n)
				}
				wantStatus, wantBody := d.direct(t, "GET", "/customer/account", nil)
				if wantStatus != http.StatusUnauthorized {
					t.Fatalf("Deputy itself answered %d; the shipped policy wants a token here", wantStatus)
				}
				if resp.StatusCode != wantStatus || string(body) != wantBody {
					t.Errorf("client got %d %q, Deputy answered %d %q", resp.StatusCode, body, wantStatus, wantBody)
				}
				if app.count() != before {
					t.Error("denied request reached the application")
				}
			})

			// A status nginx's auth_request cannot pass by itself, with a
			// body and headers the policy chose.
			t.Run("denial status, body and headers pass through", func(t *testing.T) {
				before, decided := app.count(), d.decisions(t)
				resp, body := call(t, "POST", base+"/throttled/cart", nil, map[string]any{"sku": "x"})
				// One request, one check: nginx once asked again for the body.
				if n := d.decisions(t) - decided; n != 1 {
					t.Errorf("the denial cost %v checks, want 1", n)
				}
				if resp.StatusCode != http.StatusTooManyRequests {
					t.Errorf("status %d, want 429", resp.StatusCode)
				}
				if string(body) != `{"error":"slow down"}` {
					t.Errorf("body %q", body)
				}
				if got := resp.Header.Get("Retry-After"); got != "7" {
					t.Errorf("Retry-After %q", got)
				}
				if got := resp.Header.Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type %q", got)
				}
				if app.count() != before {
					t.Error("denied request reached the application")
				}
			})

			t.Run("forged owned headers never reach the application", func(t *testing.T) {
				h := http.Header{}
				for _, name := range injected {
					h[name] = []string{"forged"}
				}
				// Every spelling a client can send: letter case, and "_" for
				// "-" (CGI, PHP and WSGI upstreams read both as one name).
				for _, name := range forgedOwned {
					h[name] = []string{"forged"}
				}
				resp, body := call(t, "GET", base+"/catalog/shoes", h, nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				s := decodeSeen(t, resp, body)
				for name, vals := range s.Headers {
					if !owned(name) {
						continue
					}
					for _, v := range vals {
						if v == "forged" || strings.Contains(v, "{") {
							t.Errorf("application received %s: %q", name, v)
						}
					}
				}
			})

			// Behind Caddy a client's X-Original-URI reached the check and was
			// decided instead of the request.
			t.Run("client-sent original URI headers change nothing", func(t *testing.T) {
				before := app.count()
				wantStatus, wantBody := d.direct(t, "POST", "/customer/account/password/", nil)
				if wantStatus != http.StatusUnauthorized {
					t.Fatalf("Deputy itself answered %d; the shipped policy wants a token here", wantStatus)
				}
				h := http.Header{
					"X-Original-Uri": {"/catalog/shoes"}, "X-Original-Method": {"GET"},
					"X-Forwarded-Uri": {"/catalog/shoes"}, "X-Forwarded-Method": {"GET"},
				}
				resp, body := call(t, "POST", base+"/customer/account/password/", h, map[string]any{"password": "x"})
				if resp.StatusCode != wantStatus || string(body) != wantBody {
					t.Errorf("client got %d %q, Deputy answers the request itself with %d %q", resp.StatusCode, body, wantStatus, wantBody)
				}
				if app.count() != before {
					t.Error("the request reached the application")
				}
			})

			t.Run("check endpoint is closed to clients", func(t *testing.T) {
				h := http.Header{"X-Original-Uri": {"/catalog/shoes"}, "X-Forwarded-Uri": {"/catalog/shoes"}}
				resp, body := call(t, "GET", base+"/deputy/authz", h, nil)
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("status %d: %s", resp.StatusCode, body)
				}
			})
		})
	}
}

// With Deputy gone, the proxy refuses every protected and public request
// rather than letting it through unchecked.
func TestDeputyDownFailsClosed(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			if resp, body := call(t, "GET", base+"/catalog/shoes", nil, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("before: %d %s", resp.StatusCode, body)
			}
			d.stop(t)
			before := app.count()
			for _, path := range []string{"/catalog/shoes", "/customer/account"} {
				resp, body := call(t, "GET", base+path, nil, nil)
				if resp.StatusCode < 500 {
					t.Errorf("%s with Deputy down: %d %s, want a 5xx", path, resp.StatusCode, body)
				}
			}
			if app.count() != before {
				t.Error("a request reached the application while Deputy was down")
			}
		})
	}
}

// The host Deputy decides on is the one the client asked the proxy for,
// not an X-Forwarded-Host the client sent along.
func TestForwardedHostIsTheProxys(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			path := "/catalog/host-probe-" + px.name
			h := http.Header{"X-Forwarded-Host": {"evil.example"}}
			if resp, body := call(t, "GET", base+path, h, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			rec := d.decisionFor(t, path)
			if rec.Host == "" || strings.Contains(rec.Host, "evil") {
				t.Errorf("decided for host %q", rec.Host)
			}
		})
	}
}

// The impersonation session is bound to the host it was redeemed on, and
// Deputy decides on the host the proxy names. The application must read
// that host, and the scheme, port, prefix and client address the proxy
// saw: Rails' request.host reads X-Forwarded-Host, Rack's scheme
// X-Forwarded-Ssl and -Scheme before -Proto, Spring, Symfony and Werkzeug
// X-Forwarded-Port and -Prefix, others Forwarded, X-Original-Host, X-Host
// or X-Real-IP, and the user from an authenticating proxy's headers
// (X-Forwarded-User, X-Auth-Request-User, Remote-User): the list every
// shipped front end clears, envoycheck.ClientHeaders. A client's copies,
// in any "-"/"_" spelling and letter case, never reach it, nor its copies
// of the headers the proxy tells Deputy the original method and URI with;
// X-Forwarded-Host, -Proto and -For are the proxy's own.
func TestUpstreamGetsTheProxysForwardedHeaders(t *testing.T) {
	clientOnly := clientOnlyForwarding()
	for _, px := range withUnderscores() {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.checkProxy())
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			h := clientForwarding()
			h["Cookie"] = []string{"deputy_session=" + session.Value}
			resp, body := call(t, "GET", base+"/customer/account", h, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			s := decodeSeen(t, resp, body)
			if s.Headers.Get("X-Deputy-Mode") != "impersonation" {
				t.Fatalf("not decided as the session: %q", s.Headers)
			}
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			// nginx names $host (no port), Caddy the Host as sent; the
			// test's client connects over loopback, in plain HTTP.
			proxys := map[string][]string{
				"X-Forwarded-Host":  {u.Host, u.Hostname()},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-For":   {"127.0.0.1"},
			}
			for name, want := range proxys {
				if vs := s.Headers.Values(name); len(vs) != 1 || !slices.Contains(want, vs[0]) {
					t.Errorf("the application got %s: %q, want the proxy's %q", name, vs, want[0])
				}
			}
			for k, vs := range s.Headers {
				n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
				if _, own := proxys[k]; !own && clientOnly[n] {
					t.Errorf("the application got the client's %s: %q", k, vs)
				}
			}
		})
	}
}

// Deputy's own API builds redeem links and session cookies for the
// storefront host, and logs and limits callers by address: behind the
// proxy it reads the forwarding headers as the application does. So the
// route to it clears a client's copies as the application's route does,
// and what Deputy gets of X-Forwarded-For, -Proto and -Host is the
// proxy's own or nothing.
func TestDeputyAPIGetsTheProxysForwardedHeaders(t *testing.T) {
	clientOnly := clientOnlyForwarding()
	for _, px := range withUnderscores() {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.checkProxy())
			rec := startRecorder(t, d)
			via := *d
			via.http = rec.addr()
			base := px.start(t, &via, startUpstream(t))
			h := clientForwarding()
			for _, name := range forgedOwned {
				h[name] = []string{"forged"}
			}
			h["Authorization"] = []string{"Bearer " + d.token(t, "--sub", "ada", "--roles", "admin")}
			for _, path := range []string{"/deputy/v1/customers/c42", "/.well-known/jwks.json"} {
				call(t, "GET", base+path, h, nil)
				got, ok := rec.get(path)
				if !ok {
					t.Fatalf("Deputy received no request for %s", path)
				}
				for k, vs := range got {
					n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
					proxys := !strings.Contains(k, "_") && (slices.Contains(envoycheck.ProxySet(), n) || n == "x-forwarded-host")
					switch {
					case proxys:
						if len(vs) != 1 || vs[0] == h.Get(k) {
							t.Errorf("%s: Deputy got %s: %q, want the proxy's one value", path, k, vs)
						}
					case clientOnly[n] || owned(k):
						t.Errorf("%s: Deputy got the client's %s: %q", path, k, vs)
					}
				}
			}
		})
	}
}

// clientForwarding is every forwarding header of ClientHeaders and
// ProxySet, in its spellings and upper-cased, with a client's values.
func clientForwarding() http.Header {
	client := map[string]string{ // a client's values, by name read with "-"
		"forwarded": "for=203.0.113.9;host=other.example;proto=https", "front-end-https": "on",
		"x-forwarded-for": "203.0.113.9", "x-forwarded-port": "8443", "x-forwarded-prefix": "/admin",
		"x-forwarded-proto": "https", "x-forwarded-protocol": "ssl", "x-forwarded-scheme": "https",
		"x-forwarded-ssl": "on", "x-url-scheme": "https", "x-real-ip": "203.0.113.9",
		"x-original-method": "DELETE", "x-forwarded-method": "DELETE",
		"x-original-uri": "/other", "x-forwarded-uri": "/other",
	}
	h := http.Header{}
	for _, name := range append(envoycheck.ClientHeaders(), envoycheck.ProxySet()...) {
		v, ok := client[strings.ReplaceAll(name, "_", "-")]
		if !ok {
			v = "other.example"
		}
		h[name] = []string{v}
		h[strings.ToUpper(name)] = []string{v}
	}
	return h
}

// clientOnlyForwarding are the names of ClientHeaders read with "-".
func clientOnlyForwarding() map[string]bool {
	names := map[string]bool{}
	for _, name := range envoycheck.ClientHeaders() {
		names[strings.ReplaceAll(name, "_", "-")] = true
	}
	return names
}

// withUnderscores are the proxies, and nginx once more with
// underscores_in_headers on: nginx ignores names with "_" unless it is on,
// and its config clears them for that case.
func withUnderscores() []proxy {
	underscores := proxy{name: "nginx underscores_in_headers on", start: func(t *testing.T, d *deputy, app *upstream) string {
		return startNginxWith(t, d, app, " underscores_in_headers on;")
	}}
	return append(slices.Clone(proxies), underscores)
}

// checkProxy is the --http-check-proxy Deputy runs with behind px.
func (px proxy) checkProxy() string { return strings.Fields(px.name)[0] }

// Deputy's HTTP port answers checks with the delegated identity and the
// signed actor token in response headers, meant for the proxy. Only the
// management API and the keys are proxied to Deputy, so no path hands a
// client those answers.
func TestCheckAnswersNeverReachTheClient(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			h := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			for _, path := range []string{"/deputy/authz/", "/deputy/x", "/deputy/authz?x=1", "/deputy//authz", "//deputy/authz", "/deputy/v1/../authz", "/.well-known/../deputy/authz", "//deputy/v1/x", "/deputy//v1/x", "//.well-known/x", "/deputy/v1/%2e%2e/x", "/%64eputy/v1/x", "/catalog/shoes"} {
				resp, body := call(t, "GET", base+path, h, nil)
				for name := range resp.Header {
					if owned(name) || strings.EqualFold(name, "X-Envoy-Auth-Headers-To-Remove") {
						t.Errorf("%s: the client received %s: %q (%d %s)", path, name, resp.Header.Get(name), resp.StatusCode, body)
					}
				}
			}
		})
	}
}

// Deputy copies X-Forwarded-For into the check's policy input and its
// management API logs and limits by it: neither may carry a client's
// copy, only the address the proxy saw. A recorder between the proxy and
// Deputy keeps what each received.
func TestDeputyGetsTheProxysForwardedHeaders(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			rec := startRecorder(t, d)
			via := *d
			via.http = rec.addr()
			base := px.start(t, &via, startUpstream(t))
			h := http.Header{
				"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"},
				"Authorization": {"Bearer " + d.token(t, "--sub", "ada", "--roles", "admin")},
			}
			for _, path := range []string{"/deputy/v1/customers/c42", "/catalog/shoes"} {
				call(t, "GET", base+path, h, nil)
			}
			for _, path := range []string{"/deputy/v1/customers/c42", "/deputy/authz"} {
				got, ok := rec.get(path)
				if !ok {
					t.Fatalf("Deputy received no request for %s", path)
				}
				for name, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http"} {
					if vs := got.Values(name); len(vs) != 1 || vs[0] != want {
						t.Errorf("%s: Deputy got %s: %q, want the proxy's %q", path, name, vs, want)
					}
				}
			}
		})
	}
}

// recorder proxies to Deputy and keeps the headers of the last request
// for each path.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string]http.Header
}

func startRecorder(t *testing.T, d *deputy) *recorder {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: d.http}
	rec := &recorder{seen: map[string]http.Header{}}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		rec.mu.Lock()
		rec.seen[r.In.URL.Path] = r.In.Header.Clone()
		rec.mu.Unlock()
		r.SetURL(target)
		r.Out.Host = r.In.Host
		// Rewrite drops these from the outbound request: Deputy reads them.
		for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			if vs, ok := r.In.Header[name]; ok {
				r.Out.Header[name] = vs
			}
		}
	}}
	rec.Server = httptest.NewServer(rp)
	t.Cleanup(rec.Close)
	return rec
}

func (r *recorder) get(path string) (http.Header, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.seen[path]
	return h, ok
}

func (r *recorder) addr() string { return strings.TrimPrefix(r.URL, "http://") }
