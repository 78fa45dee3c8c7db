package delegation_test

import (
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
