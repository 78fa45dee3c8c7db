package sidecar_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// The names PHP 8 registers fields under (php_register_variable_ex).
func TestPHPFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"access_token":  "access_token",
		"access.token":  "access_token",
		" access token": "access_token",
		"a[]":           "a",
		"a[x]":          "a",
		"a.b[x]":        "a_b",
		"a[b[c]":        "a",
		"access[token":  "access_token",
		"my[sso[ref":    "my_sso_ref",
		"my[sso.ref":    "my_sso_ref",
		"my[sso ref[":   "my_sso_ref_",
		"my[sso[":       "my_sso_",
		"my.sso[ref x":  "my_sso_ref_x",
	} {
		if got := sidecar.PHPFieldName(in); got != want {
			t.Errorf("PHPFieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
