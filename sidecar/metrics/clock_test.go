package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Redis's clock minus the replica's is exported, in seconds, as last
// measured, read at scrape time; before any measurement the family has
// no series, rather than a 0 that would read as "no skew".
func TestRedisClockOffset(t *testing.T) {
	m, reg := newMetrics(t)
	var offset time.Duration
	measured := false
	if err := m.RegisterRedisClockOffset(func() (time.Duration, bool) { return offset, measured }); err != nil {
		t.Fatal(err)
	}
	const name = "deputy_redis_clock_offset_seconds"
	if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 0 {
		t.Fatalf("%d series (%v) before any measurement, want none", n, err)
	}
	offset, measured = -1500*time.Millisecond, true
	want := `
# HELP deputy_redis_clock_offset_seconds Redis's clock (TIME) minus this replica's, in seconds, as last measured (TIME corrected by half the round trip). Negative: this replica's clock runs ahead. Reads judge expiry at the replica's clock, so a replica lagging by d honours what has ended for up to d.
# TYPE deputy_redis_clock_offset_seconds gauge
deputy_redis_clock_offset_seconds -1.5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), name); err != nil {
		t.Fatal(err)
	}
}
