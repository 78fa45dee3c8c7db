package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// encodedSpellings are the ways a mail client, a chat tool or a person
// copying a link may percent-encode a redeem link's "?" (and more), each
// of which a proxy's access log writes whole: Envoy's
// %REQ_WITHOUT_QUERY(...)% cuts the path only at a literal "?". Each
// takes the plain link /deputy/v1/impersonation/redeem?code=<code>.
var encodedSpellings = []struct {
	name  string
	spell func(link string) string
}{
	{"%3F", func(l string) string { return strings.Replace(l, "?", "%3F", 1) }},
	{"%3f and %3d", func(l string) string {
		return strings.Replace(strings.Replace(l, "?", "%3f", 1), "code=", "code%3d", 1)
	}},
	{"%253F", func(l string) string { return strings.Replace(l, "?", "%253F", 1) }},
	{"%253F and %253D", func(l string) string {
		return strings.Replace(strings.Replace(l, "?", "%253F", 1), "code=", "code%253D", 1)
	}},
	{"%25253f", func(l string) string { return strings.Replace(l, "?", "%25253f", 1) }},
	{"parameter before code, literal &", func(l string) string {
		return strings.Replace(l, "?", "%3Fredirect=%2Fcheckout%2Fcart&", 1)
	}},
	{"parameter before code, all encoded", func(l string) string {
		return strings.Replace(strings.Replace(l, "?", "%3Fredirect%3D%252Fcheckout%26", 1), "code=", "code%3D", 1)
	}},
	{"encoded ? with a literal query after", func(l string) string {
		return strings.Replace(l, "?", "%3F", 1) + "?utm_source=mail"
	}},
	{"wrapped in <> by a chat tool", func(l string) string {
		return strings.Replace(l, "?", "%3F", 1) + "%3E"
	}},
	{"whole path encoded", func(l string) string {
		return "/deputy/v1/impersonation/" + url.QueryEscape(strings.TrimPrefix(l, "/deputy/v1/impersonation/"))
	}},
	// A path in another case is the redeem path to a proxy that folds
	// case (Caddy's path matcher), and its log writes it whole alike.
	{"path in capitals", func(l string) string {
		p, q, _ := strings.Cut(l, "?")
		return strings.ToUpper(p) + "%3F" + q
	}},
	{"path in mixed case, %253F", func(l string) string {
		return strings.Replace(strings.Replace(l, "/deputy/v1/impersonation/redeem", "/Deputy/V1/Impersonation/Redeem", 1), "?", "%253F", 1)
	}},
	// A look-alike of "?" (a word processor's or an input method's) is no
	// query to any proxy, and a browser sends it percent-encoded as UTF-8.
	{"fullwidth ？, raw", func(l string) string { return strings.Replace(l, "?", "\uFF1F", 1) }},
	{"fullwidth ？, %EF%BC%9F", func(l string) string { return strings.Replace(l, "?", "%EF%BC%9F", 1) }},
	{"fullwidth ？, encoded twice", func(l string) string { return strings.Replace(l, "?", "%25EF%25BC%259F", 1) }},
	{"fullwidth ？ and ＝", func(l string) string {
		return strings.Replace(strings.Replace(l, "?", "%EF%BC%9F", 1), "code=", "code%EF%BC%9D", 1)
	}},
	{"fullwidth ？, path in mixed case", func(l string) string {
		return strings.Replace(strings.Replace(l, "/deputy/v1/impersonation/redeem", "/Deputy/V1/Impersonation/Redeem", 1), "?", "%EF%BC%9F", 1)
	}},
	{"small ﹖", func(l string) string { return strings.Replace(l, "?", "%EF%B9%96", 1) }},
}

// A redeem link that reaches Deputy with its "?" percent-encoded has been
// written, code included, to every proxy log that cuts paths at a literal
// "?" only. Deputy uses the code up and refuses, saying to ask for a new
// link: the logged code can never be redeemed. The plain link still
// redeems once.
func TestEncodedRedeemLinkBurnsTheCode(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, sp := range encodedSpellings {
			t.Run(sp.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				st := e.must(e.start(e.agent(), nil), 201)
				link, id := st.str("redeem_url"), st.str("session", "id")
				for _, method := range []string{"GET", "HEAD"} {
					r := e.do(method, sp.spell(link), "", nil)
					if cookie := cookieOf(r); r.Status != http.StatusBadRequest || cookie != "" {
						t.Fatalf("%s %s: %d %s cookie=%q, want 400 and no cookie", method, sp.spell(link), r.Status, r.Raw, cookie)
					}
					if method == "GET" && (r.errField() != "code" || !strings.Contains(r.errMsg(), "ask for a new link")) {
						t.Fatalf("%s: refusal %s does not say to ask for a new link", sp.spell(link), r.Raw)
					}
				}
				r, cookie := e.redeem(link)
				if r.Status != http.StatusUnauthorized || cookie != "" {
					t.Fatalf("plain link after %s: %d %s cookie=%q: the logged code is still valid", sp.spell(link), r.Status, r.Raw, cookie)
				}
				// The audit trail says whose code was used up, and why:
				// once, though the HEAD came with it again.
				eventually(t, 5*time.Second, func() string {
					audit, _, err := e.store.ReadAudit(context.Background(), sidecar.StreamFilter{Type: "impersonation.code_burned"})
					if err != nil {
						return err.Error()
					}
					if len(audit) != 1 {
						return fmt.Sprintf("%d impersonation.code_burned entries after %s, want 1: %+v", len(audit), sp.spell(link), audit)
					}
					a := audit[0]
					if a.Target != id || a.Customer != "c42" || a.Actor != sidecar.SweepActor || a.Data["session_actor"] != "alice" ||
						a.Data["reason"] != "redeem_link_encoded" || a.Outcome != "ok" {
						return fmt.Sprintf("entry %+v, want session %s of alice for c42 used up by deputy, reason redeem_link_encoded", a, id)
					}
					return ""
				})
			})
		}
	})
}

// The refusal reads the same whether the code was live, used, or never
// issued: the encoded spelling is no oracle for codes.
func TestEncodedRedeemLinkAnswersAlike(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		st := e.must(e.start(e.agent(), nil), 201)
		live, liveID := st.str("redeem_url"), st.str("session", "id")
		used := e.must(e.start(e.lead(), nil), 201).str("redeem_url")
		if r, _ := e.redeem(used); r.Status != http.StatusFound {
			t.Fatalf("redeem: %d %s", r.Status, r.Raw)
		}
		enc := func(l string) string { return strings.Replace(l, "?", "%3F", 1) }
		want := e.do("GET", enc(live), "", nil)
		for _, l := range []string{used, "/deputy/v1/impersonation/redeem?code=" + strings.Repeat("A", 43),
			"/deputy/v1/impersonation/redeem?code=AAAA", "/deputy/v1/impersonation/redeem?code=" + strings.Repeat("A", 300)} {
			got := e.do("GET", enc(l), "", nil)
			if got.Status != want.Status || got.Raw != want.Raw {
				t.Fatalf("%s: %d %s, a live code's: %d %s", enc(l), got.Status, got.Raw, want.Status, want.Raw)
			}
		}
		// Only the live code was used up, so only it is in the audit
		// trail: a used or unknown one records nothing.
		eventually(t, 5*time.Second, func() string {
			audit, _, err := e.store.ReadAudit(context.Background(), sidecar.StreamFilter{Type: "impersonation.code_burned"})
			if err != nil || len(audit) != 1 || audit[0].Target != liveID {
				return fmt.Sprintf("impersonation.code_burned entries %+v, %v; want the live session %s's alone", audit, err, liveID)
			}
			return ""
		})
	})
}

// A plain link is redeemed as before, and the encoded spelling of a link
// already redeemed leaves its session alone.
func TestPlainRedeemAfterEncodedOfAnother(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
		r, cookie := e.redeem(link)
		if r.Status != http.StatusFound || cookie == "" {
			t.Fatalf("redeem: %d %s", r.Status, r.Raw)
		}
		e.must(e.do("GET", strings.Replace(link, "?", "%3F", 1), "", nil), http.StatusBadRequest)
		if d, err := e.check(cookie); err != nil || d == nil {
			t.Fatalf("session redeemed before the encoded spelling arrived: %v %v", d, err)
		}
	})
}

func cookieOf(r response) string {
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Value != "" {
			return c.Value
		}
	}
	return ""
}
