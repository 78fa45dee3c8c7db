package decisionlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

func queryInput() map[string]any {
	uri := "/oauth/callback?state=keep-me&code=c0de-s3cret&%61ccess_token=t0k-s3cret&Api_Key=k3y-s3cret"
	return map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET",
			"path":   uri,
			"headers": map[string]any{
				":path":   uri,
				"referer": "https://idp.example/authorize?id_token=id-s3cret&client_id=shop",
				"accept":  "text/html?token=not-a-uri-header",
			},
		}}},
		"parsed_query": map[string]any{
			"state": []any{"keep-me"}, "code": []any{"c0de-s3cret"}, "access_token": []any{"t0k-s3cret"}, "Api_Key": []any{"k3y-s3cret"},
		},
	}
}

func TestCredentialQueryParamsAreMasked(t *testing.T) {
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	l.Log(impersonationDecision("q", queryInput()))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := out.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	b, _ := json.Marshal(recs[0])
	for _, s := range []string{"c0de-s3cret", "t0k-s3cret", "k3y-s3cret", "id-s3cret"} {
		if strings.Contains(string(b), s) {
			t.Errorf("credential %q reached the sink: %s", s, b)
		}
	}
	for _, s := range []string{"state=keep-me", "client_id=shop", `"keep-me"`, "not-a-uri-header", "/oauth/callback?"} {
		if !strings.Contains(string(b), s) {
			t.Errorf("%q lost: masking went too far: %s", s, b)
		}
	}
	masked := fmt.Sprint(recs[0]["masked"])
	for _, p := range []string{"/input/attributes/request/http/path", "/headers/:path", "/headers/referer", "/input/parsed_query/code", "/input/parsed_query/Api_Key"} {
		if !strings.Contains(masked, p) {
			t.Errorf("masked %s does not list %s", masked, p)
		}
	}
}

func TestCredentialQueryParamsAreConfigurable(t *testing.T) {
	var out lines
	cfg := testConfig()
	cfg.MaskQueryParams = []string{"state"}
	l := startLogger(t, cfg, decisionlog.NewWriterSink(&out))
	l.Log(impersonationDecision("q", queryInput()))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(out.records(t)[0])
	if strings.Contains(string(b), "keep-me") || !strings.Contains(string(b), "c0de-s3cret") {
		t.Errorf("configured list not applied: %s", b)
	}
}

// IIS and classic ASP.NET decode "%uXXXX" in a name (HttpUtility.UrlDecode):
// "p%u0077d" is their pwd and "%u0073id" their sid, and their values are
// masked.
func TestCredentialQueryParamsInIISEscapesAreMasked(t *testing.T) {
	var out lines
	l := startLogger(t, testConfig(), decisionlog.NewWriterSink(&out))
	uri := "/login?user=alice&p%u0077d=hunt3r-s3cret&%u0073id=s1d-s3cret"
	l.Log(impersonationDecision("q", map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{"method": "GET", "path": uri}}},
	}))
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(out.records(t)[0])
	for _, s := range []string{"hunt3r-s3cret", "s1d-s3cret"} {
		if strings.Contains(string(b), s) {
			t.Errorf("credential %q reached the sink: %s", s, b)
		}
	}
	if !strings.Contains(string(b), "user=alice") {
		t.Errorf("user=alice lost: masking went too far: %s", b)
	}
}
