package redis_test

import (
	"context"
	"testing"
	"time"
)

// ClockOffset is Redis's clock minus the store's: what an operator reads
// to see how far a replica's judgement of expiry (at its own clock) is
// from the scripts' (at Redis's TIME). A replica whose clock runs 5
// minutes ahead measures about -5 minutes, an honest one about 0. The
// bound is the measurement's own error on loopback, generously.
func TestClockOffsetMeasuresSkew(t *testing.T) {
	const skew, bound = 5 * time.Minute, 2 * time.Second
	honest, ahead, _, _ := skewedReplicas(t, skew)
	_, lagging, _, _ := skewedReplicas(t, -skew)
	for _, tc := range []struct {
		name string
		got  func(context.Context) (time.Duration, error)
		want time.Duration
	}{
		{"honest", honest.ClockOffset, 0},
		{"ahead", ahead.ClockOffset, -skew},
		{"lagging", lagging.ClockOffset, skew},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.got(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("measured %v", got)
			if d := got - tc.want; d < -bound || d > bound {
				t.Fatalf("offset %v, want %v within %v", got, tc.want, bound)
			}
		})
	}
}

// A Redis that does not answer gives an error, never an offset.
func TestClockOffsetUnreachable(t *testing.T) {
	honest, _, _, _ := skewedReplicas(t, 0)
	_ = honest.Close()
	if d, err := honest.ClockOffset(context.Background()); err == nil {
		t.Fatalf("offset %v from a closed store, want an error", d)
	}
}
