package delegation_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

func TestPartnerRequestValidation(t *testing.T) {
	cases := []struct {
		name   string
		caller *sidecar.Identity
		edit   func(in *delegation.AccessRequestInput)
		code   string
		field  string
	}{
		{name: "caller without org", caller: &sidecar.Identity{Subject: "x"}, code: sidecar.EFORBIDDEN},
		{name: "missing customer", edit: func(in *delegation.AccessRequestInput) { in.Customer = "" }, code: sidecar.EINVALID, field: "customer"},
		{name: "customer with a space", edit: func(in *delegation.AccessRequestInput) { in.Customer = "ac me" }, code: sidecar.EINVALID, field: "customer"},
		{name: "own organisation", edit: func(in *delegation.AccessRequestInput) { in.Customer = "partnerco" }, code: sidecar.EINVALID, field: "customer"},
		{name: "missing contact email", edit: func(in *delegation.AccessRequestInput) { in.ContactEmail = "" }, code: sidecar.EINVALID, field: "contact_email"},
		{name: "contact email with a name", edit: func(in *delegation.AccessRequestInput) { in.ContactEmail = "Cora <cora@acme.example>" }, code: sidecar.EINVALID, field: "contact_email"},
		{name: "contact email with a bidi override", edit: func(in *delegation.AccessRequestInput) { in.ContactEmail = "cora\u202eelpmaxe.emca@evil.example" }, code: sidecar.EINVALID, field: "contact_email"},
		{name: "contact email with a C1 control", edit: func(in *delegation.AccessRequestInput) { in.ContactEmail = "cora\u009b@acme.example" }, code: sidecar.EINVALID, field: "contact_email"},
		{name: "customer with a bidi isolate", edit: func(in *delegation.AccessRequestInput) { in.Customer = "acme\u2066" }, code: sidecar.EINVALID, field: "customer"},
		{name: "contact email without domain", edit: func(in *delegation.AccessRequestInput) { in.ContactEmail = "cora" }, code: sidecar.EINVALID, field: "contact_email"},
		{name: "expiry zero days", edit: func(in *delegation.AccessRequestInput) { in.ExpiryDays = 0 }, code: sidecar.EINVALID, field: "expiry_days"},
		{name: "expiry negative", edit: func(in *delegation.AccessRequestInput) { in.ExpiryDays = -3 }, code: sidecar.EINVALID, field: "expiry_days"},
		{name: "expiry above the maximum", edit: func(in *delegation.AccessRequestInput) { in.ExpiryDays = 366 }, code: sidecar.EINVALID, field: "expiry_days"},
		{name: "unknown level", edit: func(in *delegation.AccessRequestInput) { in.Level = "owner" }, code: sidecar.EINVALID, field: "level"},
		{name: "empty level", edit: func(in *delegation.AccessRequestInput) { in.Level = "" }, code: sidecar.EINVALID, field: "level"},
		{name: "unknown scope", edit: func(in *delegation.AccessRequestInput) { in.Scope = "everyone" }, code: sidecar.EINVALID, field: "scope"},
		{name: "organisation scope naming users", edit: func(in *delegation.AccessRequestInput) { in.Users = []string{"pat"} }, code: sidecar.EINVALID, field: "users"},
		{name: "individual scope without users", edit: func(in *delegation.AccessRequestInput) { in.Scope = sidecar.ScopeIndividual }, code: sidecar.EINVALID, field: "users"},
		{name: "individual user of another org", edit: func(in *delegation.AccessRequestInput) {
			in.Scope, in.Users = sidecar.ScopeIndividual, []string{"pat", "mallory"}
		}, code: sidecar.EINVALID, field: "users"},
		{name: "individual user nobody knows", edit: func(in *delegation.AccessRequestInput) {
			in.Scope, in.Users = sidecar.ScopeIndividual, []string{"ghost"}
		}, code: sidecar.EINVALID, field: "users"},
		{name: "individual self and a colleague", edit: func(in *delegation.AccessRequestInput) {
			in.Scope, in.Users = sidecar.ScopeIndividual, []string{"pat", "paul", "pat"}
		}},
		{name: "longest expiry", edit: func(in *delegation.AccessRequestInput) { in.ExpiryDays = 365 }},
		{name: "shortest expiry", edit: func(in *delegation.AccessRequestInput) { in.ExpiryDays = 1 }},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				env := newPartnerEnv(t, ps)
				in := orgRequest(sidecar.LevelLook, 30)
				if tc.edit != nil {
					tc.edit(&in)
				}
				caller := tc.caller
				if caller == nil {
					caller = patUser
				}
				r, err := env.partners.Request(context.Background(), caller, in, allowAll)
				if tc.code == "" {
					if err != nil {
						t.Fatalf("unexpected error: %v", err)
					}
					if r.Status != sidecar.RequestPending || !r.PendingExpiresAt.Equal(env.clock.Now().Add(30*day)) {
						t.Fatalf("request = %+v, want pending for 30 days", r)
					}
					if r.Scope == sidecar.ScopeIndividual && len(r.Users) != 2 {
						t.Fatalf("users = %v, want pat and paul once each", r.Users)
					}
					return
				}
				wantCode(t, err, tc.code, "")
				if got := sidecar.ErrorField(err); got != tc.field {
					t.Fatalf("field = %q, want %q (%v)", got, tc.field, err)
				}
			})
		}
	}
}

func TestPartnerDecisions(t *testing.T) {
	cases := []struct {
		name   string
		before func(env *partnerEnv, id string)
		caller *sidecar.Identity
		reject bool
		code   string
		msg    string
	}{
		{name: "contact manager approves", caller: cora},
		{name: "contact manager rejects", caller: cora, reject: true},
		{name: "partner approves its own request", caller: patUser, code: sidecar.EFORBIDDEN, msg: "not_contact_manager"},
		// Whatever policy says, a caller of neither side is answered as
		// for an unknown request: a refusal would tell it exists.
		{name: "another org approves", caller: otherOrgBob, code: sidecar.ENOTFOUND, msg: "access request not found"},
		{name: "approve after the pending expiry", caller: cora, before: func(env *partnerEnv, _ string) { env.clock.Advance(30 * day) }, code: sidecar.ECONFLICT, msg: "request_expired"},
		{name: "reject after the pending expiry", caller: cora, reject: true, before: func(env *partnerEnv, _ string) { env.clock.Advance(31 * day) }, code: sidecar.ECONFLICT, msg: "request_expired"},
		{name: "approve an approved request", caller: cora, before: func(env *partnerEnv, id string) {
			_, _, _ = env.partners.Approve(context.Background(), cora, id, allowAll)
		}, code: sidecar.ECONFLICT, msg: "request_already_approved"},
		{name: "approve a rejected request", caller: cora, before: func(env *partnerEnv, id string) {
			_, _ = env.partners.Reject(context.Background(), cora, id, allowAll)
		}, code: sidecar.ECONFLICT, msg: "request_already_rejected"},
		{name: "reject an approved request", caller: cora, reject: true, before: func(env *partnerEnv, id string) {
			_, _, _ = env.partners.Approve(context.Background(), cora, id, allowAll)
		}, code: sidecar.ECONFLICT, msg: "request_already_approved"},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				r, err := env.partners.Request(ctx, patUser, orgRequest(sidecar.LevelUpdate, 10), allowAll)
				if err != nil {
					t.Fatal(err)
				}
				if tc.before != nil {
					tc.before(env, r.ID)
				}
				if tc.reject {
					_, err = env.partners.Reject(ctx, tc.caller, r.ID, allowAll)
				} else {
					_, _, err = env.partners.Approve(ctx, tc.caller, r.ID, allowAll)
				}
				if tc.code != "" {
					wantCode(t, err, tc.code, tc.msg)
					if tc.before == nil {
						if g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat"); g != nil {
							t.Fatalf("refused decision left a grant: %+v", g)
						}
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				g, err := env.partners.Effective(ctx, "acme", "partnerco", "pat")
				if err != nil {
					t.Fatal(err)
				}
				if tc.reject {
					if g != nil {
						t.Fatalf("rejected request made a grant: %+v", g)
					}
					if n := len(events(t, env.store, sidecar.EventGrantRejected)); n != 1 {
						t.Fatalf("%d rejected events, want 1", n)
					}
					return
				}
				if g == nil || g.Level != sidecar.LevelUpdate || !g.ExpiresAt.Equal(env.clock.Now().Add(10*day)) {
					t.Fatalf("grant = %+v, want update for 10 days", g)
				}
				req := events(t, env.store, sidecar.EventGrantRequested)
				if len(req) != 1 || req[0].Data["to"] != "cora@acme.example" || req[0].Customer != "acme" {
					t.Fatalf("requested events = %+v, want one to the contact manager", req)
				}
				if n := len(events(t, env.store, sidecar.EventGrantApproved)); n != 1 {
					t.Fatalf("%d approved events, want 1", n)
				}
			})
		}
	}
}

func TestPartnerDecideUnknownRequest(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			_, _, err := env.partners.Approve(context.Background(), cora, "nope", allowAll)
			wantCode(t, err, sidecar.ENOTFOUND, "")
		})
	}
}

func TestPartnerApprovalReplacesEarlierGrant(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 90))
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 5))
			gs, err := env.partners.MyPartners(ctx, cora, "acme", allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if len(gs) != 1 || gs[0].Level != sidecar.LevelLook || !gs[0].ExpiresAt.Equal(env.clock.Now().Add(5*day)) {
				t.Fatalf("grants = %+v, want one look grant for 5 days", gs)
			}
		})
	}
}

func TestPartnerRevoke(t *testing.T) {
	cases := []struct {
		name   string
		caller *sidecar.Identity
		code   string
	}{
		{name: "by the customer", caller: cora},
		{name: "by the partner", caller: paulUser},
		{name: "by a third org", caller: otherOrgBob, code: sidecar.ENOTFOUND}, // as for an unknown grant
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
				g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat")
				_, err := env.partners.Revoke(ctx, tc.caller, "acme", g.ID, allowAll)
				after, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat")
				if tc.code != "" {
					wantCode(t, err, tc.code, "")
					if after == nil {
						t.Fatal("refused revocation removed the grant")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if after != nil {
					t.Fatalf("grant still live after revocation: %+v", after)
				}
				if n := len(events(t, env.store, sidecar.EventGrantRevoked)); n != 1 {
					t.Fatalf("%d revoked events, want 1", n)
				}
				// Revoking again is idempotent: nothing done, nothing announced.
				if again, err := env.partners.Revoke(ctx, tc.caller, "acme", g.ID, allowAll); err != nil || again != nil {
					t.Fatalf("revoking again = %+v, %v; want nothing, no error", again, err)
				}
				if n := len(events(t, env.store, sidecar.EventGrantRevoked)); n != 1 {
					t.Fatalf("%d revoked events after revoking twice, want 1", n)
				}
			})
		}
	}
}

func TestPartnerMyCustomersPrecedence(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, orgRequest(sidecar.LevelFullAdmin, 60))
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 3, "pat"))

			mine, err := env.partners.MyCustomers(ctx, patUser, allowAll)
			if err != nil {
				t.Fatal(err)
			}
			if len(mine) != 1 || mine[0].Level != sidecar.LevelCC || mine[0].Scope != sidecar.ScopeIndividual {
				t.Fatalf("pat's customers = %+v, want acme at cc (individual wins even when lower)", mine)
			}
			theirs, _ := env.partners.MyCustomers(ctx, paulUser, allowAll)
			if len(theirs) != 1 || theirs[0].Level != sidecar.LevelFullAdmin {
				t.Fatalf("paul's customers = %+v, want acme at full_admin via the org", theirs)
			}

			env.clock.Advance(4 * day) // the individual grant lapses: the org grant applies
			mine, _ = env.partners.MyCustomers(ctx, patUser, allowAll)
			if len(mine) != 1 || mine[0].Level != sidecar.LevelFullAdmin {
				t.Fatalf("after the individual grant expired = %+v, want full_admin", mine)
			}
			partners, _ := env.partners.MyPartners(ctx, cora, "acme", allowAll)
			if len(partners) != 1 || partners[0].PartnerOrg != "partnerco" {
				t.Fatalf("acme's partners = %+v, want partnerco's org grant only", partners)
			}
		})
	}
}

func TestPartnerSubscriptions(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)

			_, err := env.partners.Subscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll)
			wantCode(t, err, sidecar.EFORBIDDEN, "no_live_grant")

			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
			_, err = env.partners.Subscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll)
			wantCode(t, err, sidecar.EFORBIDDEN, "level_below_minimum:look")

			_, err = env.partners.Subscribe(ctx, patUser, "acme", "sms", allowAll)
			wantCode(t, err, sidecar.EINVALID, "")

			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 30, "pat"))
			if _, err := env.partners.Subscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll); err != nil {
				t.Fatal(err)
			}
			subs, _ := env.partners.Subscribers(ctx, cora, "acme", delegation.SubscriptionNotifications, allowAll)
			if len(subs) != 1 || subs[0].User != "pat" || subs[0].PartnerOrg != "partnerco" {
				t.Fatalf("subscribers = %+v, want pat", subs)
			}

			// The level drops below the minimum: the subscription stops counting.
			env.grant(t, patUser, individualRequest(sidecar.LevelCC, 30, "pat"))
			if subs, _ := env.partners.Subscribers(ctx, cora, "acme", delegation.SubscriptionNotifications, allowAll); len(subs) != 0 {
				t.Fatalf("subscribers after the level dropped = %+v, want none", subs)
			}
			mine, _ := env.partners.MySubscriptions(ctx, patUser, allowAll)
			if len(mine) != 1 || mine[0].Active || mine[0].Level != sidecar.LevelCC {
				t.Fatalf("own subscriptions = %+v, want one inactive at cc", mine)
			}

			// Back to look, then the grant ends: it stops counting again.
			env.grant(t, patUser, individualRequest(sidecar.LevelLook, 2, "pat"))
			if subs, _ := env.partners.Subscribers(ctx, cora, "acme", "", allowAll); len(subs) != 1 {
				t.Fatalf("subscribers = %+v, want pat again", subs)
			}
			env.clock.Advance(2 * day)
			if subs, _ := env.partners.Subscribers(ctx, cora, "acme", "", allowAll); len(subs) != 0 {
				t.Fatalf("subscribers after the grant ended = %+v, want none", subs)
			}

			if err := env.partners.Unsubscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll); err != nil {
				t.Fatal(err)
			}
			if mine, _ := env.partners.MySubscriptions(ctx, patUser, allowAll); len(mine) != 0 {
				t.Fatalf("subscriptions after unsubscribing = %+v", mine)
			}
		})
	}
}

// Subscriptions stored before the subscriber key named organisation and
// user unambiguously were filed under "<org>/<user>", written only for
// organisations without '/'. They still belong to that pair alone: its
// user lists and deletes them, subscribing again moves them to the
// current key, and a user of an organisation holding '/' whose pair spells
// the same string reaches none of them.
func TestPartnerSubscriptionsStoredUnderTheEarlierKey(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
			member := &sidecar.Identity{Subject: "a/b", Org: "partnerco"}
			outsider := &sidecar.Identity{Subject: "b", Org: "partnerco/a"}
			for _, s := range []sidecar.Subscription{
				{User: "partnerco/pat", Customer: "acme", Kind: delegation.SubscriptionNotifications},
				{User: "partnerco/pat", Customer: "acme", Kind: delegation.SubscriptionDashboard},
				{User: "partnerco/a/b", Customer: "acme", Kind: delegation.SubscriptionNotifications},
			} {
				if err := env.store.PutSubscription(ctx, &s); err != nil {
					t.Fatal(err)
				}
			}
			kinds := func(vs []delegation.SubscriptionView) []string {
				var out []string
				for _, v := range vs {
					out = append(out, v.PartnerOrg+" "+v.User+" "+v.Kind)
				}
				return out
			}
			mine, err := env.partners.MySubscriptions(ctx, patUser, allowAll)
			if want := []string{"partnerco pat dashboard", "partnerco pat notifications"}; err != nil || !slices.Equal(kinds(mine), want) {
				t.Fatalf("pat's subscriptions = %v (%v), want %v", kinds(mine), err, want)
			}
			if err := env.partners.Unsubscribe(ctx, outsider, "acme", delegation.SubscriptionNotifications, allowAll); err != nil {
				t.Fatal(err)
			}
			theirs, err := env.partners.MySubscriptions(ctx, outsider, allowAll)
			if err != nil || len(theirs) != 0 {
				t.Fatalf("outsider's subscriptions = %v (%v), want none", kinds(theirs), err)
			}
			if got, _ := env.partners.MySubscriptions(ctx, member, allowAll); !slices.Equal(kinds(got), []string{"partnerco a/b notifications"}) {
				t.Fatalf("after the outsider's delete, a/b's subscriptions = %v", kinds(got))
			}

			// Subscribing again moves the record: listed once, stored once.
			if _, err := env.partners.Subscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll); err != nil {
				t.Fatal(err)
			}
			if old, _ := env.store.SubscriptionsByUser(ctx, "partnerco/pat"); len(old) != 1 || old[0].Kind != delegation.SubscriptionDashboard {
				t.Fatalf("under the earlier key after subscribing again: %+v, want the dashboard alone", old)
			}
			subs, err := env.partners.Subscribers(ctx, cora, "acme", "", allowAll)
			if want := []string{"partnerco pat dashboard", "partnerco a/b notifications", "partnerco pat notifications"}; err != nil || !slices.Equal(kinds(subs), want) {
				t.Fatalf("acme's subscribers = %v (%v), want %v", kinds(subs), err, want)
			}

			for _, kind := range []string{delegation.SubscriptionNotifications, delegation.SubscriptionDashboard} {
				if err := env.partners.Unsubscribe(ctx, patUser, "acme", kind, allowAll); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := env.partners.MySubscriptions(ctx, patUser, allowAll); len(got) != 0 {
				t.Fatalf("pat's subscriptions after unsubscribing = %v", kinds(got))
			}
			if old, _ := env.store.SubscriptionsByUser(ctx, "partnerco/pat"); len(old) != 0 {
				t.Fatalf("under the earlier key after unsubscribing: %+v", old)
			}
		})
	}
}

func TestPartnerShares(t *testing.T) {
	cases := []struct {
		name   string
		caller *sidecar.Identity
		in     delegation.ShareInput
		code   string
		field  string
	}{
		{name: "customer shares", caller: cora, in: delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}},
		{name: "partner shares to itself", caller: patUser, in: delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}, code: sidecar.EFORBIDDEN},
		{name: "missing resource", caller: cora, in: delegation.ShareInput{User: "pat", PartnerOrg: "partnerco"}, code: sidecar.EINVALID, field: "resource"},
		{name: "missing user", caller: cora, in: delegation.ShareInput{Resource: "sr-1", PartnerOrg: "partnerco"}, code: sidecar.EINVALID, field: "user"},
		{name: "missing partner org", caller: cora, in: delegation.ShareInput{Resource: "sr-1", User: "pat"}, code: sidecar.EINVALID, field: "partner_org"},
	}
	for _, ps := range partnerStores(t) {
		for _, tc := range cases {
			t.Run(ps.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				_, err := env.partners.Share(ctx, tc.caller, "acme", tc.in, allowAll)
				if tc.code != "" {
					wantCode(t, err, tc.code, "")
					if sidecar.ErrorField(err) != tc.field {
						t.Fatalf("field = %q, want %q", sidecar.ErrorField(err), tc.field)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				shared, _ := env.store.SharesFor(ctx, "acme", "partnerco", "pat")
				if len(shared) != 1 || shared[0] != "sr-1" {
					t.Fatalf("shared = %v, want sr-1", shared)
				}
				if err := env.partners.Unshare(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat"}, allowAll); err != nil {
					t.Fatal(err)
				}
				if err := env.partners.Unshare(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat"}, allowAll); err != nil {
					t.Fatalf("unsharing twice: %v", err)
				}
				if shared, _ := env.store.SharesFor(ctx, "acme", "partnerco", "pat"); len(shared) != 0 {
					t.Fatalf("shared after unsharing = %v", shared)
				}
			})
		}
	}
}

func TestPartnerSweepExpiring(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 10))
			steps := []struct {
				name    string
				advance int
				want    int
			}{
				{name: "ten days left", advance: 0, want: 0},
				{name: "eight days left", advance: 2, want: 0},
				{name: "seven days left", advance: 1, want: 0},
				{name: "six days left", advance: 1, want: 1},
				{name: "again the same day", advance: 0, want: 0},
				{name: "a day later", advance: 1, want: 0},
			}
			for _, st := range steps {
				env.clock.Advance(time.Duration(st.advance) * day)
				n, err := env.partners.SweepExpiring(ctx, 100)
				if err != nil {
					t.Fatal(err)
				}
				if n != st.want {
					t.Fatalf("%s: announced %d, want %d", st.name, n, st.want)
				}
			}
			// Renewed and expiring again later: announced again.
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 3))
			if n, _ := env.partners.SweepExpiring(ctx, 100); n != 1 {
				t.Fatalf("renewed grant announced %d times, want 1", n)
			}
			es := events(t, env.store, sidecar.EventGrantExpiring)
			if len(es) != 2 || es[0].Customer != "acme" || es[0].Data["partner_org"] != "partnerco" {
				t.Fatalf("expiring events = %+v", es)
			}
		})
	}
}

func TestPartnerConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   delegation.PartnerConfig
		field string
	}{
		{name: "defaults", cfg: delegation.PartnerDefaults()},
		{name: "zero value", cfg: delegation.PartnerConfig{}},
		{name: "negative sweep interval", cfg: delegation.PartnerConfig{SweepInterval: -1}, field: "partner.sweep_interval"},
		{name: "bad header", cfg: delegation.PartnerConfig{OnBehalfOfHeader: "x on behalf"}, field: "partner.on_behalf_of_header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if got := sidecar.ErrorField(err); got != tc.field || (tc.field == "") != (err == nil) {
				t.Fatalf("Validate() = %v, want field %q", err, tc.field)
			}
		})
	}
}

func TestPartnerRunSweeper(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			env := newPartnerEnv(t, ps)
			env.grant(t, patUser, orgRequest(sidecar.LevelLook, 3))
			p := delegation.NewPartners(env.store, shippedData(t), delegation.PartnerConfig{SweepInterval: time.Millisecond}, delegation.WithPartnerClock(env.clock.Now))
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() { p.RunSweeper(ctx); close(stopped) }()
			partnerEventually(t, "the expiring event", func() bool { return len(events(t, env.store, sidecar.EventGrantExpiring)) > 0 })
			cancel()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				t.Fatal("sweeper did not stop with its context")
			}
			if n := len(events(t, env.store, sidecar.EventGrantExpiring)); n != 1 {
				t.Fatalf("%d expiring events after many sweeps, want 1", n)
			}
		})
	}
}

// A share is withdrawn from the user of the partner organisation named,
// and from the user in every organisation when none is named; each
// withdrawal is audited with its organisation.
func TestUnshareByPartnerOrg(t *testing.T) {
	for _, ps := range partnerStores(t) {
		t.Run(ps.name, func(t *testing.T) {
			ctx := context.Background()
			env := newPartnerEnv(t, ps)
			for _, org := range []string{"partnerco", "otherco", "thirdco"} {
				if _, err := env.partners.Share(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: org}, allowAll); err != nil {
					t.Fatal(err)
				}
			}
			shared := func(org string) bool {
				t.Helper()
				ok, err := env.store.IsShared(ctx, "acme", "sr-1", org, "pat")
				if err != nil {
					t.Fatal(err)
				}
				return ok
			}
			if err := env.partners.Unshare(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat", PartnerOrg: "partnerco"}, allowAll); err != nil {
				t.Fatal(err)
			}
			if shared("partnerco") || !shared("otherco") || !shared("thirdco") {
				t.Fatalf("after unsharing with partnerco's pat: partnerco %v, otherco %v, thirdco %v", shared("partnerco"), shared("otherco"), shared("thirdco"))
			}
			if err := env.partners.Unshare(ctx, cora, "acme", delegation.ShareInput{Resource: "sr-1", User: "pat"}, allowAll); err != nil {
				t.Fatal(err)
			}
			if shared("otherco") || shared("thirdco") {
				t.Fatal("unsharing without an organisation left a share")
			}
			audit, _, err := env.store.ReadAudit(ctx, sidecar.StreamFilter{Type: "share.delete"})
			if err != nil {
				t.Fatal(err)
			}
			var orgs []string
			for _, a := range audit {
				orgs = append(orgs, a.Data["partner_org"])
			}
			slices.Sort(orgs)
			if !slices.Equal(orgs, []string{"otherco", "partnerco", "thirdco"}) {
				t.Fatalf("share.delete audited for %v, want each organisation once", orgs)
			}
		})
	}
}

// Revoking a user's individual grant narrows their access, whoever
// revokes it: until it would have expired, an organisation grant above
// its level does not apply to them instead — not on the check path's
// lookup, not in "My Customers", not for subscriptions — whether approved
// before the revocation or after. One at or below its level applies.
func TestPartnerRevokedIndividualGrantHoldsBackTheOrgGrant(t *testing.T) {
	for _, ps := range partnerStores(t) {
		for _, by := range []*sidecar.Identity{patUser, paulUser, cora} {
			t.Run(ps.name+"/by "+by.Subject, func(t *testing.T) {
				ctx := context.Background()
				env := newPartnerEnv(t, ps)
				env.grant(t, patUser, orgRequest(sidecar.LevelUpdate, 30))
				env.grant(t, patUser, individualRequest(sidecar.LevelLook, 10, "pat"))
				if _, err := env.partners.Subscribe(ctx, patUser, "acme", delegation.SubscriptionNotifications, allowAll); err != nil {
					t.Fatal(err)
				}
				own, err := env.partners.Effective(ctx, "acme", "partnerco", "pat")
				if err != nil || own == nil || own.Level != sidecar.LevelLook {
					t.Fatalf("pat's effective grant = %+v, %v; want the individual look", own, err)
				}
				if _, err := env.partners.Revoke(ctx, by, "acme", own.ID, allowAll); err != nil {
					t.Fatal(err)
				}

				held := func(what string) {
					t.Helper()
					if g, err := env.partners.Effective(ctx, "acme", "partnerco", "pat"); err != nil || g != nil {
						t.Fatalf("%s: pat's effective grant = %+v, %v; want none", what, g, err)
					}
					if mine, err := env.partners.MyCustomers(ctx, patUser, allowAll); err != nil || len(mine) != 0 {
						t.Fatalf("%s: pat's customers = %+v, %v; want none", what, mine, err)
					}
					subs, err := env.partners.Subscribers(ctx, cora, "acme", "", allowAll)
					if err != nil || len(subs) != 0 {
						t.Fatalf("%s: subscribers = %+v, %v; want none", what, subs, err)
					}
					if g, err := env.partners.Effective(ctx, "acme", "partnerco", "paul"); err != nil || g == nil || g.Level != sidecar.LevelUpdate {
						t.Fatalf("%s: paul's effective grant = %+v, %v; want the organisation's update", what, g, err)
					}
				}
				held("after the revocation")
				env.clock.Advance(10*day - time.Minute)
				held("just before the revoked grant would have expired")
				env.clock.Advance(time.Minute)
				if g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat"); g == nil || g.Level != sidecar.LevelUpdate {
					t.Fatalf("once the revoked grant would have expired: pat's effective grant = %+v, want the organisation's", g)
				}

				// Revoked again, then the customer approves the organisation
				// anew: above the revoked grant's level that later decision
				// does not reach pat either; at it, it does.
				env.grant(t, patUser, individualRequest(sidecar.LevelLook, 10, "pat"))
				own, _ = env.partners.Effective(ctx, "acme", "partnerco", "pat")
				if _, err := env.partners.Revoke(ctx, by, "acme", own.ID, allowAll); err != nil {
					t.Fatal(err)
				}
				held("after the second revocation")
				env.grant(t, patUser, orgRequest(sidecar.LevelCreate, 30))
				if g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat"); g != nil {
					t.Fatalf("organisation grant above the revoked level approved after the revocation: pat's effective grant = %+v, want none", g)
				}
				if mine, _ := env.partners.MyCustomers(ctx, patUser, allowAll); len(mine) != 0 {
					t.Fatalf("pat's customers under an organisation grant above the revoked level = %+v, want none", mine)
				}
				env.grant(t, patUser, orgRequest(sidecar.LevelLook, 30))
				if g, _ := env.partners.Effective(ctx, "acme", "partnerco", "pat"); g == nil || g.Level != sidecar.LevelLook {
					t.Fatalf("organisation grant at the revoked level approved after the revocation: pat's effective grant = %+v, want look", g)
				}
				mine, _ := env.partners.MyCustomers(ctx, patUser, allowAll)
				if len(mine) != 1 || mine[0].Level != sidecar.LevelLook || mine[0].Scope != sidecar.ScopeOrganisation {
					t.Fatalf("pat's customers = %+v, want acme at look", mine)
				}
				if subs, _ := env.partners.Subscribers(ctx, cora, "acme", "", allowAll); len(subs) != 1 {
					t.Fatalf("subscribers = %+v, want pat's again", subs)
				}
			})
		}
	}
}
