package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

// An OPA-Envoy policy in its usual shape reads input.attributes.request.http
// whole, so the whole request is logged. Envoy with encode_raw_headers sends
// the headers in header_map, values base64 in rawValue: the bearer token and
// the session cookie must not reach the decision log from there either.
func TestHeaderMapCredentialsNotLogged(t *testing.T) {
	e := engineFor(t, "data.envoy.authz.allow", `package envoy.authz
http_request := input.attributes.request.http
default allow := false
allow if http_request.method == "GET"
`, nil)
	var buf logtest.Lines
	cfg := decisionlog.Defaults()
	cfg.FlushInterval = 10 * time.Millisecond
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&buf), decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	p := authz.New(e, authz.WithQuery("data.envoy.authz.allow"), authz.WithDecisionLogger(l), authz.WithDecisionInput(true))
	p.Check(context.Background(), checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/catalog/x","host":"shop",
	  "headerMap":{"headers":[
	    {"key":"authorization","rawValue":"`+b64("Bearer SECRET-BEARER-TOKEN")+`"},
	    {"key":"cookie","rawValue":"`+b64("deputy_session=SECRET-SESSION-TOKEN")+`"},
	    {"key":"accept","rawValue":"`+b64("text/html")+`"}]}}}}}`))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(buf.Records(t))
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if !strings.Contains(out, b64("text/html")) {
		t.Fatalf("the request's header_map was not logged: %s", out)
	}
	for _, s := range []string{"SECRET-BEARER-TOKEN", "SECRET-SESSION-TOKEN", b64("Bearer SECRET-BEARER-TOKEN"), b64("deputy_session=SECRET-SESSION-TOKEN")} {
		if strings.Contains(out, s) {
			t.Errorf("decision log holds %q: %s", s, out)
		}
	}
}
