package redis_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// Shares were once stored under "<user>\x00<resource>", whatever their
// partner organisation. Such a share counts only for the organisation its
// record names, and for no one when it names none; it is replaced and
// deleted through that organisation's key, and a share that names no
// organisation can still be deleted.
func TestSharesStoredBeforeTheyNamedTheirOrg(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: "legacy",
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	legacy := func(sh sidecar.Share) {
		t.Helper()
		raw, err := json.Marshal(sh)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Client().HSet(ctx, "legacy:{cust:acme}:shares", sh.User+"\x00"+sh.Resource, raw).Err(); err != nil {
			t.Fatal(err)
		}
	}
	legacy(sidecar.Share{Customer: "acme", Resource: "SR-1", User: "pat", PartnerOrg: "partnerco"})
	legacy(sidecar.Share{Customer: "acme", Resource: "SR-2", User: "pat"})
	legacy(sidecar.Share{Customer: "acme", Resource: "SR-3", User: "pat", PartnerOrg: "partnerco"})

	sharedWith := func(org string) []string {
		t.Helper()
		got, err := s.SharesFor(ctx, "acme", org, "pat")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := sharedWith("partnerco"); !slices.Equal(got, []string{"SR-1", "SR-3"}) {
		t.Fatalf("shared with pat of partnerco: %v, want SR-1 and SR-3", got)
	}
	if got := sharedWith("otherco"); len(got) != 0 {
		t.Fatalf("shared with pat of otherco: %v, want none", got)
	}
	for _, tc := range []struct {
		resource, org string
		want          bool
	}{{"SR-1", "partnerco", true}, {"SR-1", "otherco", false}, {"SR-2", "partnerco", false}, {"SR-2", "", false}} {
		if ok, err := s.IsShared(ctx, "acme", tc.resource, tc.org, "pat"); err != nil || ok != tc.want {
			t.Fatalf("IsShared(%s, %q) = %v %v, want %v", tc.resource, tc.org, ok, err, tc.want)
		}
	}

	// Sharing SR-3 again replaces the legacy record; SR-1 and SR-2 are
	// deleted through their organisation's key, or none.
	if err := storetest.ErrOf(s.PutShare(ctx, &sidecar.Share{Customer: "acme", Resource: "SR-3", User: "pat", PartnerOrg: "partnerco", SharedBy: "cora"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteShare(ctx, "acme", "SR-1", "otherco", "pat", "cora"); sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		t.Fatalf("deleting SR-1 through otherco: %v, want %s", err, sidecar.ENOTFOUND)
	}
	for _, d := range []struct{ resource, org string }{{"SR-1", "partnerco"}, {"SR-2", ""}} {
		if _, err := s.DeleteShare(ctx, "acme", d.resource, d.org, "pat", "cora"); err != nil {
			t.Fatalf("deleting %s through %q: %v", d.resource, d.org, err)
		}
	}
	all, err := s.ListShares(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Resource != "SR-3" || all[0].SharedBy != "cora" {
		t.Fatalf("shares left: %+v, want SR-3 as shared again", all)
	}
}
