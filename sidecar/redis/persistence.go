package redis

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Persistence is what the masters holding Deputy's state said of their
// persistence (INFO persistence), as one reading.
type Persistence struct {
	// Masters is how many masters answered: one for a single node or a
	// Sentinel-resolved master, each master of a Cluster.
	Masters int
	// WithoutAOF names the masters (by address) reporting aof_enabled:0:
	// they keep writes only in RDB snapshots, if at all, and a restart
	// reloads the last snapshot, undoing every answered write since
	// (a revocation, a consent withdrawal, an assignment removed, and
	// the audit entries and events that recorded them).
	WithoutAOF []string
}

// AOF reports whether every master appends its writes to an AOF.
func (p Persistence) AOF() bool { return p.Masters > 0 && len(p.WithoutAOF) == 0 }

// Persistence reads INFO persistence from every master: the node, the
// master Sentinel resolves, or each master of a Cluster. A master that
// does not answer, or refuses INFO (an ACL user without +info, a managed
// Redis that hides the section), fails the reading: a partial one would
// report AOF on while a master that was not read may have it off.
//
// It reads INFO replication too, and keeps how many replicas each master
// has connected (connected_slaves) for the narrowing writes, which wait
// for one of them (redis.narrowing_replicas auto): a reading that fails
// keeps the last that succeeded.
func (s *Store) Persistence(ctx context.Context) (Persistence, error) {
	_, cluster := s.c.(*goredis.ClusterClient)
	where := func(c *goredis.Client) string { // as wantReplicas looks a master up
		if cluster {
			return c.Options().Addr
		}
		return ""
	}
	var (
		mu       sync.Mutex
		p        Persistence
		replicas = map[string]int{}
		one      = func(ctx context.Context, c *goredis.Client) error {
			name := c.Options().Addr
			if s.cfg.MasterName != "" {
				name = "sentinel master " + s.cfg.MasterName
			}
			info, err := c.Info(ctx, "persistence").Result()
			if err != nil {
				return fmt.Errorf("INFO persistence on %s: %w", name, err)
			}
			aof, ok := infoField(info, "aof_enabled")
			if !ok {
				return fmt.Errorf("INFO persistence on %s: no aof_enabled field", name)
			}
			repl, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("INFO replication on %s: %w", name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if v, ok := infoField(repl, "connected_slaves"); ok {
				if n, err := strconv.Atoi(v); err == nil {
					replicas[where(c)] = n
				}
			}
			p.Masters++
			if aof != "1" {
				p.WithoutAOF = append(p.WithoutAOF, name)
			}
			return nil
		}
		err error
	)
	switch c := s.c.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *goredis.Client:
		err = one(ctx, c)
	default:
		err = fmt.Errorf("INFO persistence: client %T not supported", s.c)
	}
	if err != nil {
		return Persistence{}, unavailable(err)
	}
	s.repl.replicas.Store(&replicas)
	slices.Sort(p.WithoutAOF)
	return p, nil
}

// infoField is the value of name in an INFO reply.
func infoField(info, name string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), name+":"); ok {
			return v, true
		}
	}
	return "", false
}
