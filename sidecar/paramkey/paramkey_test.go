package paramkey_test

import (
	"testing"

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
