package sidecar_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

// The one rule for which accounts cannot be impersonated, as the stores
// apply it when a session starts and when a profile is written.
func TestProtectionProtects(t *testing.T) {
	data := sidecar.Protection{Roles: []string{"staff", "admin"}, Customers: []string{"c9"}}
	cases := []struct {
		name    string
		id      string
		profile *sidecar.Customer
		staff   bool
		want    bool
	}{
		{"plain_customer", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"customer"}}, false, false},
		{"profile_flag", "c1", &sidecar.Customer{ID: "c1", Protected: true}, false, true},
		{"protected_role_among_others", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"customer", "admin"}}, false, true},
		{"role_names_compare_exactly", "c1", &sidecar.Customer{ID: "c1", Roles: []string{"Admin"}}, false, false},
		{"listed_customer", "c9", &sidecar.Customer{ID: "c9"}, false, true},
		{"known_staff", "c1", &sidecar.Customer{ID: "c1"}, true, true},
		{"no_profile", "c1", nil, false, false},
		{"no_profile_but_listed", "c9", nil, false, true},
		{"no_profile_but_staff", "c1", nil, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := data.Protects(tc.id, tc.profile, tc.staff); got != tc.want {
				t.Fatalf("Protects = %v, want %v", got, tc.want)
			}
		})
	}
	if (sidecar.Protection{}).Protects("c1", &sidecar.Customer{ID: "c1", Roles: []string{"admin"}}, false) {
		t.Fatal("a role protects only when policy data lists it")
	}
}
