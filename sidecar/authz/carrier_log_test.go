package authz_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// foreignJWT looks like a JWT (identity.LooksLikeJWS) and is not the one
// Deputy verified (none is: the pipeline has no verifier).
const foreignJWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.bWFsbG9yeS1zaWduYXR1cmUtMDEyMzQ1Njc4OQ"

// carrierSpellings are names the check reads as the query carrier
// my_sso: as sent, in another case, as PHP reads it, bracketed, escaped,
// folded from non-ASCII letters.
var carrierSpellings = []string{
	"my_sso", "MY_SSO", "my.sso", "my+sso", "my_sso[]", "%6Dy_sso", "[my_sso]", "[[my_sso]]", "]my_sso",
	"my_sso]", "%5Bmy_sso%5D", "my_%C5%BFso", "my_s%C5%BFo", "MY_%C5%BF%C5%BFO", "my_%C3%9Fo",
	"[my+sso]%zz", "x;my_sso", "+my_sso", "my[sso", "my%5Bsso", "MY[s%C5%BFo",
}

// carrierLogCheck checks one request carrying foreignJWT under a query
// field named name, through a pipeline whose only credential carrier is
// query:my_sso and whose decisions are logged, input included, by a
// logger told of that carrier as cmd/deputy tells it. The policy reads
// the input whole (as an OPA-Envoy policy reading
// input.attributes.request.http does), so the path, the :path header and
// parsed_query are logged, and allows unless the check found a credential
// it does not verify. It reports whether the check refused the request,
// and the record as logged.
type carrierLogCheck struct {
	engine *policy.Engine
}

func newCarrierLogCheck(t testing.TB) *carrierLogCheck {
	return &carrierLogCheck{engine: engineFor(t, "data.envoy.authz.allow", `package envoy.authz
default allow := false
allow if {
	count(input) >= 0
	not input.identity_error
}
`, nil)}
}

func (c *carrierLogCheck) run(t testing.TB, name string) (refused bool, logged string) {
	t.Helper()
	var buf logtest.Lines
	cfg := decisionlog.Defaults()
	cfg.MaskQueryParams = []string{} // the carrier list alone masks my_sso
	cfg.FlushInterval = time.Millisecond
	carriers := []string{"query:my_sso"}
	cc, err := authz.ParseCredentialCarriers(carriers)
	if err != nil {
		t.Fatal(err)
	}
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&buf), decisionlog.WithLogger(slog.New(slog.DiscardHandler)),
		decisionlog.WithCredentialCarriers(cc.HeaderNames(), cc.QueryNames()))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := authz.New(c.engine, authz.WithQuery("data.envoy.authz.allow"), authz.WithDecisionLogger(l), authz.WithDecisionInput(true),
		authz.WithCredentialCarriers(carriers))
	resp := p.Check(context.Background(), withHeaders(t, "/catalog/x?page=2&"+name+"="+foreignJWT, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	recs := buf.Records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	b, err := json.Marshal(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	return !resp.Allowed, string(b)
}

// A token the check refused as a credential it does not verify, because
// it sits in a field read as a credential carrier, is never logged: the
// decision log masks every spelling the check reads as the carrier. The
// record of "?[my_sso]=<jwt>" held the token in clear in the path, the
// :path header and parsed_query.
func TestRefusedCarrierTokenNotLogged(t *testing.T) {
	c := newCarrierLogCheck(t)
	for _, name := range carrierSpellings {
		t.Run(name, func(t *testing.T) {
			refused, logged := c.run(t, name)
			if !refused {
				t.Fatalf("the check does not read %q as the carrier my_sso", name)
			}
			if !strings.Contains(logged, "page=2") || !strings.Contains(logged, `"parsed_query"`) {
				t.Fatalf("the request's query was not logged: %s", logged)
			}
			if strings.Contains(logged, "bWFsbG9yeS1zaWduYXR1cmUtMDEyMzQ1Njc4OQ") {
				t.Errorf("the refused token is logged: %s", logged)
			}
		})
	}
	// Not the carrier: allowed, and logged as sent.
	if refused, logged := c.run(t, "my-sso"); refused || !strings.Contains(logged, foreignJWT) {
		t.Errorf("my-sso: refused %v, logged %s", refused, logged)
	}
}

// Whatever a field is named, when the check refuses the request for the
// token in it, the record does not hold that token: masking reads field
// names as the check does, so the two cannot drift apart.
func FuzzRefusedCarrierTokenNotLogged(f *testing.F) {
	for _, s := range carrierSpellings {
		f.Add(s)
	}
	c := newCarrierLogCheck(f)
	f.Fuzz(func(t *testing.T, name string) {
		if strings.Contains(name, "bWFsbG9yeS1zaWduYXR1cmUtMDEyMzQ1Njc4OQ") {
			return
		}
		if refused, logged := c.run(t, name); refused && strings.Contains(logged, "bWFsbG9yeS1zaWduYXR1cmUtMDEyMzQ1Njc4OQ") {
			t.Errorf("%q: the check refused the token, the log holds it: %s", name, logged)
		}
	})
}
