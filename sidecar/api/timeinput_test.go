package api_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
)

// The zero time.Time, 0001-01-01T00:00:00Z, is what a Go client sends for
// a time it never set. Deputy stores "no expiry" as that zero value, so
// an expires_at naming that instant, in any spelling, must be judged as the
// instant it is (long past, refused as any past time is), never taken for
// the absence of an expiry: consent that never lapses.
func TestConsentExpiryAtZeroInstantIsPast(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	until := e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true, "expires_at": until}), 200)
	zero := []string{"0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00", "0000-12-31T23:00:00-01:00"}
	for _, caller := range []struct {
		name  string
		token string
	}{{"customer", e.customer()}, {"staff on behalf", e.lead()}} {
		for _, at := range zero {
			t.Run(caller.name+" "+at, func(t *testing.T) {
				r := e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", caller.token, map[string]any{"allowed": true, "expires_at": at}), 400)
				if r.errField() != "expires_at" || r.errMsg() != "must be in the future" {
					t.Fatalf("got %s", r.Raw)
				}
				r = e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", caller.token, map[string]any{"allowed": false, "expires_at": at}), 400)
				if r.errField() != "expires_at" {
					t.Fatalf("withdrawal with an expiry: %s", r.Raw)
				}
			})
		}
	}
	// The consent in force is still the one given with its expiry.
	if r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent", e.customer(), nil), 200); r.str("expires_at") != until || r.Body["allowed"] != true {
		t.Fatalf("consent = %s, want allowed until %s", r.Raw, until)
	}
	// Leaving expires_at out still gives consent without an expiry.
	r := e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true}), 200)
	if _, ok := r.Body["expires_at"]; ok {
		t.Fatalf("consent without expires_at = %s", r.Raw)
	}
}

// A time filter bound at the zero instant would be read as no bound: a
// log asked for what started before year 1 would answer everything.
func TestTimeFilterAtZeroInstantRefused(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.handler = api.New(api.WithVerifier(e.idv), api.WithEngine(e.engine), api.WithClock(e.clock.Now),
		api.WithRoutes(api.NewImpersonation(e.svc), api.NewStreams(e.store)))
	e.seed()
	e.must(e.start(e.agent(), nil), 201)
	mailer := e.as("mail", "mailer")
	for _, tc := range []struct {
		path, token string
	}{
		{"/deputy/v1/impersonation/log?", e.lead()},
		{"/deputy/v1/events?", mailer},
	} {
		for _, param := range []string{"from", "to"} {
			for _, at := range []string{"0001-01-01T00:00:00Z", "0000-12-31T23:00:00-01:00", "0000-06-01T00:00:00Z"} {
				t.Run(tc.path+param+"="+at, func(t *testing.T) {
					r := e.must(e.do("GET", tc.path+param+"="+url.QueryEscape(at), tc.token, nil), 400)
					if r.errField() != param {
						t.Fatalf("got %s", r.Raw)
					}
				})
			}
		}
		// A bound after it still filters.
		r := e.must(e.do("GET", tc.path+"to="+url.QueryEscape("0001-01-01T00:00:01Z"), tc.token, nil), 200)
		if items := r.Body["items"].([]any); len(items) != 0 {
			t.Fatalf("to year 1 listed %s", r.Raw)
		}
	}
}

// RFC 3339 writes an offset as two-digit hours up to 23 and minutes up to
// 59, the hour with two digits and fractions after a period. Go's
// time.Parse takes +24:00, +23:60, a one-digit hour and a comma: a client
// that sends one means something else than the instant Deputy would store.
func TestTimesOutsideRFC3339Refused(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	ahead := e.clock.Now().Add(48 * time.Hour).UTC()
	day := ahead.Format("2006-01-02")
	bad := []string{
		day + "T19:00:00+24:00", day + "T19:00:00-24:00", day + "T19:00:00+23:60", day + "T19:00:00+24:59",
		day + "T9:00:00Z", day + "T19:00:00,5Z", day + "T19:00:00.Z", day + "T19:00:00+0100", day + "T19:00:00+01",
	}
	for _, at := range bad {
		t.Run("consent "+at, func(t *testing.T) {
			r := e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true, "expires_at": at}), 400)
			if r.errField() != "expires_at" || r.errMsg() != "must be an RFC 3339 time" {
				t.Fatalf("got %s", r.Raw)
			}
		})
		t.Run("log "+at, func(t *testing.T) {
			r := e.must(e.do("GET", "/deputy/v1/impersonation/log?from="+url.QueryEscape(at), e.lead(), nil), 400)
			if r.errField() != "from" || r.errMsg() != "must be an RFC 3339 time" {
				t.Fatalf("got %s", r.Raw)
			}
		})
	}
	for _, at := range []string{day + "T19:00:00+23:59", day + "T19:00:00-23:59", day + "T19:00:00-00:00", day + "T19:00:00.5Z", day + "T19:00:00+14:00"} {
		t.Run("consent "+at, func(t *testing.T) {
			want, err := time.Parse(time.RFC3339, at)
			if err != nil {
				t.Fatal(err)
			}
			r := e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true, "expires_at": at}), 200)
			got, err := time.Parse(time.RFC3339, r.str("expires_at"))
			if err != nil || !got.Equal(want) {
				t.Fatalf("expires_at = %s, want %s", r.Raw, want.UTC())
			}
		})
	}
}
