package redis_test

import (
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar/redis"
)

// An address entry that is not host:port is refused without being
// repeated when it holds anything a host:port cannot: a password put in a
// query, a fragment or a path would be written to the start-up error,
// and from there to the pod's logs.
func TestMalformedAddrIsNotRepeated(t *testing.T) {
	for _, a := range []string{
		"127.0.0.1:6379?password=hunter2",
		"127.0.0.1:6379/0?password=hunter2",
		"127.0.0.1:hunter2",
		"127.0.0.1:6379#hunter2",
		"redis:6379 hunter2",
		"127.0.0.1?pw=hunter2",
	} {
		err := redis.Config{Addrs: []string{a}}.Validate()
		if err == nil {
			t.Errorf("%q accepted", a)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error repeats it: %v", a, err)
		}
		if !strings.Contains(err.Error(), "redis.addrs") {
			t.Errorf("%q: the error names no setting: %v", a, err)
		}
	}
	// A plain typo is repeated, for the operator to see.
	if err := (redis.Config{Addrs: []string{"redis.internal:99999"}}).Validate(); err == nil || !strings.Contains(err.Error(), "redis.internal:99999") {
		t.Errorf("port out of range: %v", err)
	}
}
