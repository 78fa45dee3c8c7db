package redis

import (
	"context"
	"time"
)

// clockSamples is how many TIME round trips ClockOffset takes; the
// shortest is kept, as the one whose middle is known best.
const clockSamples = 3

// ClockOffset measures Redis's clock minus the store's (WithClock):
// positive when this replica's clock lags Redis's. Redis's TIME is taken
// as read at the middle of the round trip, so the measurement is off by
// at most half the round trip; of a few samples, the one with the
// shortest round trip is kept. Scripts judge what is over at the earlier
// of the writer's clock and Redis's, but reads judge expiry at the
// replica's own: a replica lagging by d honours what has ended for up to
// d. On a Cluster, TIME is answered by one node, whichever go-redis picks.
func (s *Store) ClockOffset(ctx context.Context) (time.Duration, error) {
	var best, bestRTT time.Duration
	for i := range clockSamples {
		before := s.now()
		at, err := s.c.Time(ctx).Result()
		if err != nil {
			return 0, unavailable(err)
		}
		rtt := s.now().Sub(before)
		if i == 0 || rtt < bestRTT {
			best, bestRTT = at.Sub(before.Add(rtt/2)), rtt
		}
	}
	return best, nil
}
