package decisionlog

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// A query carrier (and a mask_query_params entry) is masked under every
// spelling the check reads as that name when it looks for a credential
// in it: leading brackets and spaces dropped and the name cut at its
// first bracket (Rack 2, qs, PHP), any case, "." and " " read as "_"
// (PHP), and a non-ASCII letter read as the ASCII one it folds to
// (ASP.NET and Java compare names so: "ſ" is "s", "ß" is "ss"). A
// request the check refused for the token in "[my_sso]" had that token
// logged in clear. The names here hold no secret word, so only the
// carrier and mask_query_params lists can mask them.
func TestCarrierMaskedInEverySpellingTheCheckReads(t *testing.T) {
	m := newMasker(Config{MaskQueryParams: []string{"code"}})
	m.addCarriers(nil, []string{"my_sso"})
	// parsed "-": Go leaves the pair out of parsed_query.
	for _, tc := range []struct{ raw, parsed string }{
		// Already masked before: case, PHP's "." and " ", brackets after,
		// escapes.
		{"my_sso", ""}, {"MY_SSO", ""}, {"my.sso", ""}, {"my+sso", ""}, {"my_sso[]", ""}, {"%6Dy_sso", ""},
		{"CODE", ""}, {"code[]", ""},
		// Brackets before, or a closing one after.
		{"[my_sso]", ""}, {"[[my_sso]]", ""}, {"]my_sso", ""}, {"my_sso]", ""}, {"[my_sso]x", ""},
		{"%5Bmy_sso%5D", ""}, {"+[my_sso]", ""}, {"[code]", ""}, {"[CODE][]", ""},
		// Folded to ASCII: U+017F (ſ) is "s".
		{"my_%C5%BFso", ""}, {"my_s%C5%BFo", ""}, {"MY_%C5%BF%C5%BFO", ""}, {"[my_%C5%BFso]", ""},
		// Full case folding: "ß" is "ss".
		{"my_%C3%9Fo", ""},
		// An invalid escape after the name: the check still reads the
		// name, "+" as a space.
		{"[my+sso]%zz", "-"}, {"my+sso[%zz]", "-"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			in := httpInput(map[string]any{"path": "/a?page=2&" + tc.raw + "=SECRET-JWT", "headers": map[string]any{":path": "/a?" + tc.raw + "=SECRET-JWT"}})
			if tc.parsed != "-" {
				// OPA-Envoy's parsed_query, as Go decodes the query.
				q, err := url.ParseQuery(tc.raw + "=SECRET-JWT")
				if err != nil || len(q) != 1 {
					t.Fatalf("Go reads %q as %v (%v)", tc.raw, q, err)
				}
				pq := map[string]any{"page": []any{"2"}}
				for k, v := range q {
					pq[k] = []any{v[0]}
				}
				in["parsed_query"] = pq
			}
			rec := &Record{}
			m.mask(context.Background(), rec, in, nil)
			b, err := json.Marshal(rec.Input)
			if err != nil {
				t.Fatal(err)
			}
			if s := string(b); strings.Contains(s, "SECRET-JWT") || !strings.Contains(s, "page=2") {
				t.Errorf("%q logged in clear, or page lost: %s", tc.raw, s)
			}
		})
	}
	// Names the check reads as another one stay in clear.
	for _, raw := range []string{"my_ssox", "my_ss", "mysso", "my-sso", "x[my_sso]", "my%5Fss0", "codes", "co%C4%B1de"} {
		out, changed := m.maskQuery("/a?"+raw+"=VISIBLE", false)
		if changed || !strings.Contains(out, "VISIBLE") {
			t.Errorf("%q masked: %s", raw, out)
		}
	}
}

// A mask_query_params entry naming an array's member masks that member,
// in any case and escaped, and leaves its siblings and the array's other
// spellings in clear, as before entries were read as the check reads
// names (its key would be the whole array).
func TestMaskQueryParamNamingAMember(t *testing.T) {
	m := newMasker(Config{MaskQueryParams: []string{"payment[card_number]"}})
	for _, raw := range []string{"payment[card_number]", "PAYMENT[Card_Number]", "payment%5Bcard_number%5D"} {
		if out, changed := m.maskQuery("/a?"+raw+"=4111111111111111&page=2", false); !changed || strings.Contains(out, "4111111111111111") {
			t.Errorf("%q logged in clear: %s", raw, out)
		}
	}
	for _, raw := range []string{"payment[method]", "payment[amount]", "payment", "payment[]"} {
		if out, changed := m.maskQuery("/a?"+raw+"=VISIBLE", false); changed || !strings.Contains(out, "VISIBLE") {
			t.Errorf("%q masked: %s", raw, out)
		}
	}
}
