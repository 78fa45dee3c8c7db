package delegation_test

import (
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestExposedRedeemCodes(t *testing.T) {
	const prefix = "/deputy/v1/"
	code := strings.Repeat("Ab9-_", 8) + "xyz" // 43, a code's length
	other := strings.Repeat("Z", 43)
	cases := []struct {
		name, path, query string
		exposed           bool
		codes             []string
	}{
		{"plain link", prefix + "impersonation/redeem", "code=" + code, false, nil},
		{"plain link, path escaped", prefix + "impersonation/re%64eem", "code=" + code, false, nil},
		{"another path", prefix + "impersonation/sessions%3Fcode=" + code, "", false, nil},
		{"another prefix", "/app/impersonation/redeem%3Fcode=" + code, "", false, nil},
		{"%3F", prefix + "impersonation/redeem%3Fcode=" + code, "", true, []string{code}},
		{"%3f%3d", prefix + "impersonation/redeem%3fcode%3d" + code, "", true, []string{code}},
		{"%253F%253D", prefix + "impersonation/redeem%253Fcode%253D" + code, "", true, []string{code}},
		{"encoded thrice", prefix + "impersonation/redeem%25253Fcode%25253D" + code, "", true, []string{code}},
		{"code in the literal query", prefix + "impersonation/redeem%3Fredirect=%2Fx", "code=" + code, true, []string{code}},
		{"parameter before, all encoded", prefix + "impersonation/redeem%3Fredirect%3D%252Fx%26code%3D" + code, "", true, []string{code}},
		{"key in another case", prefix + "impersonation/redeem%3FCODE=" + code, "", true, []string{code}},
		{"junk around the code", prefix + "impersonation/redeem%3Fcode=%3C" + code + "%3E", "", true, []string{code}},
		{"code run on", prefix + "impersonation/redeem%3Fcode=" + code + "more", "", true, []string{code, code[4:] + "more"}},
		{"two codes", prefix + "impersonation/redeem%3Fcode=" + code + "&code=" + other, "", true, []string{code, other}},
		{"no code", prefix + "impersonation/redeem%3Fredirect=%2Fcheckout", "", true, nil},
		{"short bogus code", prefix + "impersonation/redeem%3Fcode=AAAA", "", true, nil},
		{"slash before the ?", prefix + "impersonation/redeem/%3Fcode=" + code, "", true, []string{code}},
		{"slashes doubled", "/" + prefix + "impersonation//redeem%3Fcode=" + code, "", true, []string{code}},
		{"dot segments", prefix + "x/../impersonation/./redeem%3Fcode=" + code, "", true, []string{code}},
		{"plain link, slashes doubled", "/" + prefix + "impersonation/redeem", "code=" + code, false, nil},
		// Proxies that fold case route these as the redeem path (Caddy's
		// path matcher), and Envoy's log writes them whole all the same.
		{"path in capitals", "/DEPUTY/V1/IMPERSONATION/REDEEM%3Fcode=" + code, "", true, []string{code}},
		{"path in mixed case", "/Deputy/V1/Impersonation/Redeem%3Fcode=" + code, "", true, []string{code}},
		{"path in mixed case, %253F", "/Deputy/v1/impersonation/Redeem%253Fcode=" + code, "", true, []string{code}},
		{"long s for s", prefix + "imper%C5%BFonation/redeem%3Fcode=" + code, "", true, []string{code}},
		{"plain link in capitals", "/DEPUTY/V1/IMPERSONATION/REDEEM", "code=" + code, false, nil},
		// A "?" a mail client, a word processor or an input method wrote
		// in another form: a browser sends it percent-encoded as UTF-8.
		{"fullwidth ?, raw", prefix + "impersonation/redeem\uFF1Fcode=" + code, "", true, []string{code}},
		{"fullwidth ?, encoded", prefix + "impersonation/redeem%EF%BC%9Fcode=" + code, "", true, []string{code}},
		{"fullwidth ?, lower-case escapes", prefix + "impersonation/redeem%ef%bc%9fcode=" + code, "", true, []string{code}},
		{"fullwidth ?, encoded twice", prefix + "impersonation/redeem%25EF%25BC%259Fcode=" + code, "", true, []string{code}},
		{"fullwidth ? and =", prefix + "impersonation/redeem%EF%BC%9Fcode%EF%BC%9D" + code, "", true, []string{code}},
		{"fullwidth ?, path in capitals", "/DEPUTY/V1/IMPERSONATION/REDEEM%EF%BC%9Fcode=" + code, "", true, []string{code}},
		{"small ?", prefix + "impersonation/redeem%EF%B9%96code=" + code, "", true, []string{code}},
		{"Arabic ?", prefix + "impersonation/redeem%D8%9Fcode=" + code, "", true, []string{code}},
		{"double ?", prefix + "impersonation/redeem%E2%81%87code=" + code, "", true, []string{code}},
		{"fullwidth path", prefix + "impersonation/%EF%BD%92%EF%BD%85%EF%BD%84%EF%BD%85%EF%BD%85%EF%BD%8D%3Fcode=" + code, "", true, []string{code}},
		{"fullwidth ? on another path", prefix + "impersonation/sessions%EF%BC%9Fcode=" + code, "", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			codes, ok := delegation.ExposedRedeemCodes(prefix, tc.path, tc.query)
			if ok != tc.exposed || !slices.Equal(codes, tc.codes) {
				t.Fatalf("ExposedRedeemCodes(%q, %q) = %q, %v; want %q, %v", tc.path, tc.query, codes, ok, tc.codes, tc.exposed)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(prefix + "impersonation/redeem%3F")
		for i := range 100 {
			b.WriteString("c=" + strings.Repeat(string(rune('A'+i%26)), 43+i) + "&")
		}
		codes, ok := delegation.ExposedRedeemCodes(prefix, b.String(), "")
		if !ok || len(codes) != 16 {
			t.Fatalf("%d codes from 100 candidates, want the first 16", len(codes))
		}
	})
}

// A path is read for a redeem link only as far as a mangled link reaches:
// decoding and normalizing all of a long path that NFKC expands (U+FDFA is
// eighteen characters in that form) cost every check tens of milliseconds.
// What one call allocates stays near the bound, whatever follows it.
func TestExposedRedeemCodesReadsABoundedPath(t *testing.T) {
	const prefix = "/deputy/v1/"
	code := strings.Repeat("Ab9-_", 8) + "xyz"
	for _, tc := range []struct{ name, path string }{
		{"encoded U+FDFA", "/x/" + strings.Repeat("%EF%B7%BA", 20000)},
		{"raw U+FDFA", "/x/" + strings.Repeat("\uFDFA", 20000)},
		{"encoded letters", "/x/" + strings.Repeat("%41", 20000)},
		{"redeem link, then U+FDFA", prefix + "impersonation/redeem%3Fcode=" + code + "&x=" + strings.Repeat("%EF%B7%BA", 20000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			delegation.ExposedRedeemCodes(prefix, tc.path, "")
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
				t.Fatalf("one call allocated %d bytes for a %d-byte path", n, len(tc.path))
			}
		})
	}
	codes, ok := delegation.ExposedRedeemCodes(prefix, prefix+"impersonation/redeem%3Fcode="+code+"&x="+strings.Repeat("%EF%B7%BA", 20000), "")
	if !ok || len(codes) != 1 || codes[0] != code {
		t.Fatalf("the link's code is not read: %v %v", codes, ok)
	}
	// The bound is on the decoded link: the whole link in fullwidth
	// characters, encoded three times, is 1.7 KB as sent and read whole.
	fullwidth := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r > 0x20 && r < 0x7f {
				return r - 0x21 + 0xFF01
			}
			return r
		}, s)
	}
	link := fullwidth(prefix + "impersonation/redeem?code=" + code)
	for n := 1; n <= 3; n++ {
		link = strings.ReplaceAll(url.PathEscape(link), "/", "%2F")
		if codes, ok := delegation.ExposedRedeemCodes(prefix, "/"+link, ""); !ok || !slices.Contains(codes, code) {
			t.Errorf("the fullwidth link encoded %d times (%d bytes) is not read: %v %v", n, len(link)+1, codes, ok)
		}
	}
	// A query is read as far as codes are.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	delegation.ExposedRedeemCodes(prefix, prefix+"impersonation/redeem%3F", strings.Repeat("%"+strings.Repeat("25", 30)+"41", 2000))
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
		t.Fatalf("a long query: one call allocated %d bytes", n)
	}
}
