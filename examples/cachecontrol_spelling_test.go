package examples_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// During an impersonation session Deputy asks for a page-cache bypass
// (cache-control: no-cache upstream). Behind the shipped Caddyfile a
// client's Cache_Control reached the PHP application beside it, and PHP
// read it as HTTP_CACHE_CONTROL in place of Deputy's value. The
// Caddyfile removes that spelling whenever Deputy sets the header.
func TestCaddyCacheControlSpelling(t *testing.T) {
	bin, err := exec.LookPath("php")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := `<?php header("x-upstream: app"); header("content-type: text/plain"); echo "HTTP_CACHE_CONTROL=" . ($_SERVER["HTTP_CACHE_CONTROL"] ?? "");`
	if err := os.WriteFile(filepath.Join(dir, "index.php"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := start(t, "php", nil, dir, bin, "-S", addr, filepath.Join(dir, "index.php"))
	waitHTTP(t, p, "http://"+addr+"/", http.StatusOK)

	d := startDeputy(t, "caddy")
	app := &upstream{Server: &httptest.Server{URL: "http://" + addr}}
	base := startCaddy(t, d, app)
	session, _, _ := impersonate(t, d, base)
	h := http.Header{"Cookie": {"deputy_session=" + session.Value}, "Cache_Control": {"max-age=3600"}}
	resp, body := callRaw(t, base, "/customer/account", h)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("impersonated page: %d %s, want 200", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "HTTP_CACHE_CONTROL=no-cache") {
		t.Errorf("impersonated page: the application read %s, not Deputy's no-cache", body)
	}
}
