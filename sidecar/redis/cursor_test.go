package redis

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
)

func FuzzValidStreamID(f *testing.F) {
	for _, seed := range []string{"0-0", "1700000000000-1", "-", "1-", "-1", "a-b", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		_, _ = sidecar.ParseStreamID(id) // must not panic; Redis refuses what slips through with an error, never a panic
	})
}
