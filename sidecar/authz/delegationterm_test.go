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
// the same delegation and needs: after the base delegation is kept, a
// delegation differing in any one field gets its own term, and one with
// roles or attributes policy reads is built afresh.
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
			terms := newDelegationTerms()
			b := base
			terms.term(&b, need)
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
				if got := terms.term(&v, need); !got.Equal(want) {
					t.Errorf("%s: kept term %v, want %v", f, got, want)
				}
				b := base
				if got, want := terms.term(&b, need), ast.NewTerm(delegationToAST(&base, need)); !got.Equal(want) {
					t.Errorf("after %s: base term %v, want %v", f, got, want)
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
	terms := newDelegationTerms()
	terms.term(d, narrow)
	if got, want := terms.term(d, wide), ast.NewTerm(delegationToAST(d, wide)); !got.Equal(want) {
		t.Errorf("term under wider needs %v, want %v", got, want)
	}
}
