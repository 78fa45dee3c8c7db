package authz

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A kept input.delegation is only ever the one delegationToAST builds for
// the same delegation and needs, and kept identity headers the ones built
// for the same delegation: after the base delegation is kept, a
// delegation differing in any one field gets its own term and headers,
// and one with roles or attributes policy reads has its term built
// afresh.
func TestDelegationTermPerFacts(t *testing.T) {
	exp := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	base := sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g1", Actor: "pat", ActorName: "Pat", ActorOrg: "helpco",
		Subject: "acme", SubjectName: "Acme", Level: "update", Scope: "organisation", StoreView: "en", Domain: "d.example",
		Reason: "r", Ticket: "T-1", ExpiresAt: exp, Attributes: map[string]any{"precedence": "organisation"}}
	variants := map[string]func(d *sidecar.Delegation){
		"Mode":             func(d *sidecar.Delegation) { d.Mode = sidecar.ModeReseller },
		"ID":               func(d *sidecar.Delegation) { d.ID = "g2" },
		"Actor":            func(d *sidecar.Delegation) { d.Actor = "sam" },
		"ActorName":        func(d *sidecar.Delegation) { d.ActorName = "Sam" },
		"ActorRoles":       func(d *sidecar.Delegation) { d.ActorRoles = []string{"support"} },
		"ActorOrg":         func(d *sidecar.Delegation) { d.ActorOrg = "otherco" },
		"Subject":          func(d *sidecar.Delegation) { d.Subject = "globex" },
		"SubjectName":      func(d *sidecar.Delegation) { d.SubjectName = "Globex" },
		"Level":            func(d *sidecar.Delegation) { d.Level = "cc" },
		"Scope":            func(d *sidecar.Delegation) { d.Scope = "individual" },
		"StoreView":        func(d *sidecar.Delegation) { d.StoreView = "de" },
		"Domain":           func(d *sidecar.Delegation) { d.Domain = "e.example" },
		"Reason":           func(d *sidecar.Delegation) { d.Reason = "s" },
		"Ticket":           func(d *sidecar.Delegation) { d.Ticket = "T-2" },
		"ExpiresAt":        func(d *sidecar.Delegation) { d.ExpiresAt = exp.Add(time.Second) },
		"SubjectProtected": func(d *sidecar.Delegation) { d.SubjectProtected = true },
		"SubjectRoles":     func(d *sidecar.Delegation) { d.SubjectRoles = []string{"staff"} },
		"Attributes": func(d *sidecar.Delegation) {
			d.Attributes = map[string]any{"precedence": "organisation", "shared_resources": []any{"sr-1"}}
		},
	}
	// Every field of a delegation is varied here: a new field must be
	// added to delegationKey (or to keyable) and to this test.
	var fields []string
	for f := range reflect.TypeFor[sidecar.Delegation]().Fields() {
		fields = append(fields, f.Name)
	}
	for _, f := range fields {
		if variants[f] == nil {
			t.Errorf("field %s of sidecar.Delegation is not varied: is it in delegationKey?", f)
		}
	}
	for name, need := range map[string]*policy.InputNeeds{
		"every field": {All: true},
		"every field, one attribute": {Children: map[string]*policy.InputNeeds{
			"mode": {}, "id": {}, "actor": {}, "actor_name": {}, "actor_org": {}, "subject": {}, "subject_name": {},
			"level": {}, "scope": {}, "store_view": {}, "domain": {}, "reason": {}, "ticket": {}, "expires_at": {},
			"subject_protected": {}, "actor_roles": {}, "subject_roles": {},
			"attributes": {Children: map[string]*policy.InputNeeds{"shared_resources": {}}},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			terms := newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of")
			fresh := func(d *sidecar.Delegation) []Header {
				return newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of").identityHeaders(d)
			}
			b := base
			terms.lookup(&b, need)
			for _, f := range slices.Sorted(func(yield func(string) bool) {
				for k := range variants {
					if !yield(k) {
						return
					}
				}
			}) {
				v := base
				variants[f](&v)
				want := ast.NewTerm(delegationToAST(&v, need))
				kept, got := terms.lookup(&v, need)
				if !got.Equal(want) {
					t.Errorf("%s: kept term %v, want %v", f, got, want)
				}
				if want := fresh(&v); !slices.Equal(kept.headers, want) {
					t.Errorf("%s: kept headers %v, want %v", f, kept.headers, want)
				}
				b := base
				kept, got = terms.lookup(&b, need)
				if want := ast.NewTerm(delegationToAST(&base, need)); !got.Equal(want) {
					t.Errorf("after %s: base term %v, want %v", f, got, want)
				}
				if want := fresh(&base); !slices.Equal(kept.headers, want) {
					t.Errorf("after %s: base headers %v, want %v", f, kept.headers, want)
				}
			}
		})
	}
}

// A delegation is kept per activation: the same facts under needs that
// read more fields get the term those needs name.
func TestDelegationTermPerActivation(t *testing.T) {
	d := &sidecar.Delegation{Mode: sidecar.ModePartner, Actor: "pat", Subject: "acme", Level: "update"}
	narrow := &policy.InputNeeds{Children: map[string]*policy.InputNeeds{"mode": {}}}
	wide := &policy.InputNeeds{All: true}
	terms := newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of")
	terms.lookup(d, narrow)
	if _, got := terms.lookup(d, wide); !got.Equal(ast.NewTerm(delegationToAST(d, wide))) {
		t.Errorf("term under wider needs %v, want %v", got, ast.NewTerm(delegationToAST(d, wide)))
	}
	if _, got := terms.lookup(d, nil); got != nil {
		t.Errorf("term under no needs %v, want none", got)
	}
}

// The actor token in the kept headers is always the one the signer handed
// out for this check: a new token replaces the one kept, and the headers
// of an earlier check are left as they were.
func TestDelegationHeadersCarryTheTokenSignedNow(t *testing.T) {
	d := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "imp_1", Actor: "staff-1", Subject: "cust-9", SubjectName: "Zoë"}
	terms := newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of")
	kept, _ := terms.lookup(d, nil)
	first := kept.withToken("x-deputy-token", "token-1")
	if again := kept.withToken("x-deputy-token", "token-1"); &again[0] != &first[0] {
		t.Errorf("the same token built new headers")
	}
	second := kept.withToken("x-deputy-token", "token-2")
	for _, tc := range []struct {
		headers []Header
		token   string
	}{{first, "token-1"}, {second, "token-2"}} {
		want := append(terms.identityHeaders(d), Header{"x-deputy-token", tc.token})
		if !slices.Equal(tc.headers, want) {
			t.Errorf("headers %v, want %v", tc.headers, want)
		}
		if cap(tc.headers) != len(tc.headers) {
			t.Errorf("headers %v have room to append into", tc.headers)
		}
	}
	if got := kept.withToken("x-deputy-token", "token-1"); got[len(got)-1].Value != "token-1" {
		t.Errorf("token %q, want the one signed now", got[len(got)-1].Value)
	}
}

// Roles are kept by their content: the same roles in another slice find
// the kept term, roles changed in place after it was kept, or moved from
// one list to the other, get a term of their own.
func TestDelegationTermPerRoles(t *testing.T) {
	need := &policy.InputNeeds{All: true}
	terms := newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of")
	d := &sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "imp_1", Actor: "staff-1", Subject: "cust-9",
		ActorRoles: []string{"support", "admin"}, SubjectRoles: []string{"customer"}}
	_, kept := terms.lookup(d, need)
	same := *d
	same.ActorRoles, same.SubjectRoles = []string{"support", "admin"}, []string{"customer"}
	if _, got := terms.lookup(&same, need); got != kept {
		t.Errorf("the same roles in other slices built another term")
	}
	d.SubjectRoles[0] = "staff" // changed in place after the term was kept
	moved := same
	moved.ActorRoles, moved.SubjectRoles = []string{"support"}, []string{"admin", "customer"}
	for name, v := range map[string]*sidecar.Delegation{"changed in place": d, "moved between lists": &moved, "none": {Mode: d.Mode, ID: d.ID, Actor: d.Actor, Subject: d.Subject}} {
		want := ast.NewTerm(delegationToAST(v, need))
		if _, got := terms.lookup(v, need); !got.Equal(want) {
			t.Errorf("%s: kept term %v, want %v", name, got, want)
		}
	}
}

// BenchmarkDelegationTerm is input.delegation of a live session whose
// staff member and customer carry roles, resolved afresh on every check
// as the session resolver does.
func BenchmarkDelegationTerm(b *testing.B) {
	need := &policy.InputNeeds{All: true}
	terms := newDelegationTerms(newHeaderNames("x-deputy-"), "x-on-behalf-of")
	cached := sidecar.Delegation{Mode: sidecar.ModeImpersonation, ID: "imp_1", Actor: "staff-1", ActorName: "Sam Staff",
		Subject: "cust-9", SubjectName: "Zoë Customer", StoreView: "en", ExpiresAt: time.Now().Add(time.Hour),
		ActorRoles: []string{"support_agent", "store_manager"}, SubjectRoles: []string{"customer"}}
	b.ReportAllocs()
	for b.Loop() {
		d := cached
		if _, term := terms.lookup(&d, need); term == nil {
			b.Fatal("no term")
		}
	}
}
