package memory_test

import (
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now sidecar.Clock) sidecar.Store {
		return memory.New(memory.WithClock(now))
	})
}
