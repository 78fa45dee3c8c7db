package paramkey_test

import (
	"testing"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar/paramkey"
)

// A field is read as my_sso under every spelling a common upstream keys
// so, and under no other.
func TestReadAs(t *testing.T) {
	key := paramkey.Of("my_sso")
	for raw, want := range map[string]bool{
		"my_sso": true, "MY_SSO": true, "my.sso": true, "my+sso": true, "my%20sso": true, "my_sso[]": true,
		"my_sso[x]": true, "[my_sso]": true, "[[my_sso]]": true, "]my_sso": true, "my_sso]": true, "+my_sso": true,
		"%6Dy_sso": true, "%5Bmy_sso%5D": true, "my_%C5%BFso": true, "my_%C3%9Fo": true, "[my+sso]%zz": true,
		"my-sso": false, "mysso": false, "my_ss": false, "my_ssox": false, "x[my_sso]": false, "my_sso%zz": false,
		"my%5Fss0": false, "": false,
	} {
		if got := paramkey.Same(paramkey.Of(paramkey.Decode(raw)), key); got != want {
			t.Errorf("%q read as my_sso: %v, want %v", raw, got, want)
		}
	}
}

// PHP's reading of a name whose "[" is never closed is a second key; a
// name with none, or with a closed "[", has one.
func TestKeys(t *testing.T) {
	for name, want := range map[string][2]string{
		"access[token":      {"access", "access_token"},
		"ACCESS[to\u212aen": {"ACCESS", "access_token"},
		"access[tok]en":     {"access", ""},
		"access_token[]":    {"access_token", ""},
		"access_token":      {"access_token", ""},
		"[access_token":     {"access_token", "_access_token"},
		"a.b[c d":           {"a.b", "a_b_c_d"},
		"my[sso[ref":        {"my", "my_sso_ref"},
	} {
		key, php := paramkey.Keys(name)
		if key != want[0] || php != want[1] {
			t.Errorf("Keys(%q) = %q, %q; want %q, %q", name, key, php, want[0], want[1])
		}
	}
}

func TestFoldASCII(t *testing.T) {
	for in, want := range map[string]string{
		"ABC": "abc", "ſ": "s", "\u212a": "k", "ı": "i", "İ": "i", "ß": "ss", "ﬁ": "fi", "é": "é", "日本": "日本",
	} {
		if got := paramkey.FoldASCII(in); got != want {
			t.Errorf("FoldASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

// Names of ASCII bytes holding no escape, which are nearly all, cost no
// allocation: the check reads every query field's name.
func TestPlainNamesAllocateNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = paramkey.Of(paramkey.Decode("access_token[]")) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestDecodeIIS(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
		ok        bool
	}{
		{raw: "query"},
		{raw: "%71uery"}, // Decode's alone
		{raw: "%u0071uery", want: "query", ok: true},
		{raw: "%U0071uery", want: "query", ok: true},
		{raw: "q%u0075%65ry+x", want: "query x", ok: true},
		{raw: "%ud83d%ude00x", want: "😀x", ok: true},
		{raw: "%ud83dx", want: "\ufffdx", ok: true},
		{raw: "%ude00%ud83d", want: "\ufffd\ufffd", ok: true},
		{raw: "%u00", want: ""},
		{raw: "%uzzzz"},
		{raw: "x%u0041%zz", want: "xA%zz", ok: true},
	} {
		got, ok := paramkey.DecodeIIS(tc.raw)
		if got != tc.want || ok != tc.ok {
			t.Errorf("DecodeIIS(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzDecodeIIS: any name decodes without a panic, to valid UTF-8 when the
// name and Decode's reading are, and to Decode's reading when it holds no
// %u escape.
func FuzzDecodeIIS(f *testing.F) {
	for _, s := range []string{"%u0071uery", "%ud83d%ude00", "%u%u0", "%ud800%", "+%2", "%U00e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := paramkey.DecodeIIS(raw)
		if !ok {
			if got != "" {
				t.Fatalf("DecodeIIS(%q) = %q, not ok", raw, got)
			}
			return
		}
		if utf8.ValidString(raw) && utf8.ValidString(paramkey.Decode(raw)) && !utf8.ValidString(got) {
			t.Fatalf("DecodeIIS(%q) = %q: not UTF-8", raw, got)
		}
	})
}
