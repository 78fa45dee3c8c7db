package examples_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// startPHP runs PHP's built-in server as the application. It answers with
// what PHP itself parsed from the query ($_GET), where PHP GraphQL
// endpoints (Magento's included) read a GET's document.
func startPHP(t *testing.T) *upstream {
	t.Helper()
	bin, err := exec.LookPath("php")
	if err != nil {
		t.Fatal("php is not installed: make deps (apt-get install -y php-cli)")
	}
	dir := t.TempDir()
	script := `<?php header("x-upstream: app"); header("content-type: application/json");
echo json_encode(["method" => $_SERVER["REQUEST_METHOD"], "path" => $_SERVER["REQUEST_URI"], "get" => $_GET]);`
	if err := os.WriteFile(filepath.Join(dir, "index.php"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := start(t, "php", nil, dir, bin, "-S", addr, filepath.Join(dir, "index.php"))
	waitHTTP(t, p, "http://"+addr+"/", http.StatusOK)
	return &upstream{Server: &httptest.Server{URL: "http://" + addr}}
}

// During impersonation a GraphQL GET whose document names a forbidden
// field (updateCustomerV2) is denied. PHP reads a second document under
// names Deputy's parsed_query (Go's parser, as OPA-Envoy's) keeps apart or
// leaves out: " query" (a leading space, sent as "+" or %20) is
// $_GET["query"], the last of the two winning, and so is a "query" pair
// holding a ";" or an invalid escape, which Go drops. The policy would
// judge the harmless first document alone: each such request is refused.
func TestGraphQLDocumentUnderAnotherSpelling(t *testing.T) {
	const (
		cart     = "%7Bcart(cart_id%3A%22c1%22)%7Bid%7D%7D"
		mutation = "mutation%7BupdateCustomerV2(input%3A%7Bfirstname%3A%22x%22%7D)%7Bcustomer%7Bid%7D%7D%7D"
		// The same mutation with a ";" and with "%zz" in the first
		// name: valid GraphQL, read by PHP, dropped by Go.
		semicolon = "mutation%7BupdateCustomerV2(input%3A%7Bfirstname%3A%22;%22%7D)%7Bcustomer%7Bid%7D%7D%7D"
		badEscape = "mutation%7BupdateCustomerV2(input%3A%7Bfirstname%3A%22%zz%22%7D)%7Bcustomer%7Bid%7D%7D%7D"
	)
	for _, px := range proxies {
		t.Run(px.name, func(t *testing.T) {
			d := startDeputy(t, px.name)
			app := startPHP(t)
			base := px.start(t, d, app)
			session, _, _ := impersonate(t, d, base)
			staff := http.Header{"Cookie": {"deputy_session=" + session.Value}}

			if resp, body := callRaw(t, base, "/graphql?query="+cart, staff); resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
				t.Fatalf("a cart query is refused: %d %s", resp.StatusCode, body)
			}
			if resp, body := callRaw(t, base, "/graphql?query="+mutation, staff); resp.StatusCode < 400 {
				t.Fatalf("the mutation in query was allowed: %d %s", resp.StatusCode, body)
			}
			for _, target := range []string{
				"/graphql?query=" + cart + "&+query=" + mutation,
				"/graphql?query=" + cart + "&%20query=" + mutation,
				"/graphql?query=" + cart + "&query=" + semicolon,
				"/graphql?query=" + cart + "&query=" + badEscape,
				"/graphql?+query=" + mutation,
			} {
				resp, body := callRaw(t, base, target, staff)
				if resp.StatusCode < 400 || resp.Header.Get("x-upstream") == "app" {
					var got struct {
						Get map[string]any `json:"get"`
					}
					_ = json.Unmarshal(body, &got)
					t.Errorf("GET %s reached the application (%d), whose $_GET[\"query\"] is %v", target, resp.StatusCode, got.Get["query"])
				}
			}
			// A name that only reads like one is no spelling of it.
			if resp, body := callRaw(t, base, "/graphql?query="+cart+"&queryx=1&x_query=1", staff); resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
				t.Errorf("a cart query with other parameters is refused: %d %s", resp.StatusCode, body)
			}
		})
	}
}
