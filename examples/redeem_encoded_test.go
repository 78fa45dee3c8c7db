package examples_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A redeem link whose "?" a mail or chat client percent-encoded, or wrote
// as a look-alike (fullwidth ？), on its path as sent or in another case,
// reaches Deputy through each shipped proxy (nginx re-encodes the path it
// decoded, Caddy passes it as sent), and a proxy's log may have written
// it whole: Deputy uses the code up and says to ask for a new link, and
// the plain link, opened afterwards, no longer redeems.
func TestEncodedRedeemLinkThroughProxyIsDead(t *testing.T) {
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startUpstream(t)
			base := px.start(t, d, app)

			admin := bearer(d.token(t, "--sub", "ada", "--roles", "admin"))
			customer := bearer(d.token(t, "--sub", "c42", "--roles", "customer"))
			agent := bearer(d.token(t, "--sub", "alice", "--roles", "support_agent"))
			mustStatus(t, base, "PUT", "/deputy/v1/customers/c42", admin, map[string]any{"name": "Chloé Martin", "default_store_view": "default"}, http.StatusOK)
			mustStatus(t, base, "PUT", "/deputy/v1/customers/c42/consent", customer, map[string]any{"allowed": true}, http.StatusOK)
			link := func() string {
				t.Helper()
				var started struct {
					RedeemURL string `json:"redeem_url"`
				}
				b := mustStatus(t, base, "POST", "/deputy/v1/impersonation/sessions", agent, map[string]any{"customer_id": "c42", "reason": "cart issue"}, http.StatusCreated)
				if err := json.Unmarshal(b, &started); err != nil || !strings.HasPrefix(started.RedeemURL, "/deputy/v1/impersonation/redeem?code=") {
					t.Fatalf("start: %v: %s", err, b)
				}
				return started.RedeemURL
			}
			for _, spell := range []func(string) string{
				func(l string) string { return strings.Replace(l, "?", "%3F", 1) },
				func(l string) string {
					return strings.Replace(strings.Replace(l, "?", "%3f", 1), "code=", "code%3d", 1)
				},
				func(l string) string { return strings.Replace(l, "?", "%253F", 1) },
				// A look-alike of "?", as a browser sends it, and a path
				// in another case (Caddy's path matcher folds case; nginx
				// asks Deputy's check about it).
				func(l string) string { return strings.Replace(l, "?", "%EF%BC%9F", 1) },
				func(l string) string { return strings.Replace(l, "?", "%EF%B9%96", 1) },
				func(l string) string {
					return strings.Replace(strings.Replace(l, "/deputy/v1/impersonation/redeem", "/Deputy/V1/Impersonation/Redeem", 1), "?", "%3F", 1)
				},
				func(l string) string {
					return strings.Replace(strings.Replace(l, "/deputy/v1/impersonation/redeem", "/DEPUTY/V1/IMPERSONATION/REDEEM", 1), "?", "%EF%BC%9F", 1)
				},
			} {
				l := link()
				resp, body := callRaw(t, base, spell(l), nil)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "ask for a new link") || len(resp.Cookies()) != 0 {
					t.Fatalf("%s: %d %s, want Deputy's 400 saying to ask for a new link", spell(l), resp.StatusCode, body)
				}
				if resp, body := call(t, "GET", base+l, nil, nil); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("plain link after %s: %d %s: the code a proxy may have logged is still valid", spell(l), resp.StatusCode, body)
				}
			}
			if resp, body := call(t, "GET", base+link(), nil, nil); resp.StatusCode != http.StatusFound {
				t.Fatalf("plain link: %d %s", resp.StatusCode, body)
			}
		})
	}
}
