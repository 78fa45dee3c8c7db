package sidecar_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func TestFoldID(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"lower", "acme", "acme"},
		{"upper", "ACME", "acme"},
		{"mixed with digits and punctuation", "Acme-42_X.y@Shop:Z", "acme-42_x.y@shop:z"},
		{"non-ASCII bytes stay", "ACM\u00c9", "acm\u00c9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sidecar.FoldID(tc.in); got != tc.want {
				t.Fatalf("FoldID(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestValidAssignedID: only ids on which the loose collations of MySQL and
// MariaDB agree, up to letter case, may be assigned; the variants they
// read as another customer's id are refused, field and set named.
func TestValidAssignedID(t *testing.T) {
	for _, ok := range []string{"acme", "ACME", "cust1", "partner:shopa.example", "ops@acme.example", "a_b-c.d"} {
		if err := sidecar.ValidAssignedID("customer", ok); err != nil {
			t.Errorf("ValidAssignedID(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{
		"", "acme ", "acme\u00a0", "acme\u3000", "acme\u20dd", "\u0142odz", "\u00e6on", "str\u00f8m", "stra\u00dfe", "\u0131dx",
		"\uff41\uff43\uff4d\uff45", "acm\u00e9", "acme\u0301", "ac\u200bme", "acm\xe9", "a/b", "a+b", "a%62", "a{b}", "a\tb",
	} {
		err := sidecar.ValidAssignedID("customer", bad)
		if sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "customer" {
			t.Errorf("ValidAssignedID(%q) = %v, want invalid customer", bad, err)
		}
	}
}

func BenchmarkFoldID(b *testing.B) {
	for _, s := range []string{"acme-corp-000123", "ACME-CORP-000123"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = sidecar.FoldID(s)
			}
		})
	}
}
