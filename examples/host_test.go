package examples_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A Host naming two hosts, "<storefront>:1,admin.example": Go's server
// (Caddy) accepts "," and ";" in Host, and forward_auth and reverse_proxy
// pass it on as X-Forwarded-Host, whose last comma-separated value is
// what Rails' request.host and werkzeug's ProxyFix read, while a reader
// cutting at the last ":" finds the storefront the session was redeemed
// on. Through each proxy, a session is honoured only where the
// application reads the host it was redeemed on: Caddy's request is
// refused (400, by Deputy), nginx cuts $host at the ":" and sends the
// same storefront host to Deputy and to the application. A redeem link
// opened on such a host sets no cookie through Caddy.
func TestCommaHostThroughProxy(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			session, _, agent := impersonate(t, d, base)
			h := http.Header{"Cookie": {"deputy_session=" + session.Value}}
			if resp, body := callRawHost(t, base, u.Host, "/customer/account", h); resp.StatusCode != http.StatusOK {
				t.Fatalf("on the storefront host: %d %s", resp.StatusCode, body)
			}
			hosts := []string{
				u.Hostname() + ":1,admin.example",
				u.Hostname() + ":,admin.example",
				u.Host + ",admin.example",
				u.Hostname() + ":1;admin.example",
			}
			for _, host := range hosts {
				before := app.count()
				resp, body := callRawHost(t, base, host, "/customer/account", h)
				if px.name == "caddy" && (resp.StatusCode != http.StatusBadRequest || app.count() != before) {
					t.Errorf("Host %q: %d (the application saw %d requests), want Deputy's 400: %s", host, resp.StatusCode, app.count()-before, body)
				}
				if resp.Header.Get("x-upstream") != "app" {
					continue
				}
				s := decodeSeen(t, resp, body)
				if s.Headers.Get("X-Deputy-Subject") == "" {
					continue
				}
				// The session reached the application: every reader of
				// the host must find the storefront.
				for _, name := range []string{"Host", "X-Forwarded-Host"} {
					for _, v := range s.Headers.Values(name) {
						if got := lastHostname(v); got != u.Hostname() {
							t.Errorf("Host %q: the session is honoured while the application reads %s %q as %q", host, name, v, got)
						}
					}
				}
			}

			// A fresh link, opened on such a host.
			start := mustStatus(t, base, "POST", "/deputy/v1/impersonation/sessions", agent, map[string]any{"customer_id": "c42", "reason": "cart issue"}, http.StatusCreated)
			var started struct {
				RedeemURL string `json:"redeem_url"`
			}
			if err := json.Unmarshal(start, &started); err != nil || started.RedeemURL == "" {
				t.Fatalf("start: %v: %s", err, start)
			}
			link := started.RedeemURL
			if lu, err := url.Parse(link); err == nil && lu.IsAbs() {
				link = lu.RequestURI()
			}
			resp, body := callRawHost(t, base, u.Hostname()+":1,admin.example", link, nil)
			if px.name == "caddy" && (resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0) {
				t.Errorf("redeem on a comma host: %d cookies %v, want Deputy's 400 and none: %s", resp.StatusCode, resp.Cookies(), body)
			}
		})
	}
}

// lastHostname is the host Rails and werkzeug's ProxyFix read from a
// Host or X-Forwarded-Host value: its last comma-separated value, without
// a port.
func lastHostname(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[:i]
	}
	return v
}
