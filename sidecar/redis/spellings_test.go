package redis_test

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/redis"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// A profile or staff mark written before the spellings hash existed is
// in no hash; an id in capitals still finds its lower-case spelling's,
// so "STAFF-1" reads as protected by a "staff-1" stored before the
// upgrade.
func TestSpellingsWrittenBeforeTheHash(t *testing.T) {
	srv := redistest.Start(t)
	prefix := freshPrefix()
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr}, KeyPrefix: prefix,
		ReadTimeout: redistest.ReplyTimeout, WriteTimeout: redistest.ReplyTimeout, InvalidationAckTimeout: redistest.AckTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	// As the store wrote them before: the profile and the mark alone.
	if err := c.Set(ctx, prefix+":{imp}:customer:staff-1", `{"id":"staff-1","protected":true}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.SAdd(ctx, prefix+":{imp}:staff", "staff-2").Err(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"STAFF-1": "staff-1", "Staff-2": "staff-2"} {
		st, err := s.GetCustomerState(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Spellings) != 1 || st.Spellings[0].ID != want || !(sidecar.Protection{}).ProtectsState(id, st) {
			t.Fatalf("%s: spellings %+v, want %s protecting it", id, st.Spellings, want)
		}
	}
	if st, err := s.GetCustomerState(ctx, "other"); err != nil || len(st.Spellings) != 0 {
		t.Fatalf("other: %+v, %v", st, err)
	}
}
