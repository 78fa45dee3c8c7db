package resolve

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the state cache.
const (
	DefaultStateCacheTTL         = 10 * time.Second
	DefaultStateCacheNegativeTTL = time.Second
	DefaultStateCacheSize        = 100_000
)

// Cache kinds, as reported to a CacheObserver.
const (
	CacheGrants      = "grants"
	CacheShares      = "shares"
	CacheAssignments = "assignments"
	CacheCustomers   = "customers"
)

// CacheKinds names every kind the delegation caches report to a
// CacheObserver, so metrics can show each one before its first lookup.
func CacheKinds() []string {
	return []string{CacheSessions, CacheGrants, CacheShares, CacheAssignments, CacheCustomers}
}

// CacheConfig is the `state_cache` section: the local cache in front of the
// grant, share and assignment lookups on the check path.
type CacheConfig struct {
	// An entry younger than TTL is also what keeps requests decided while
	// the store is down.
	TTL time.Duration `yaml:"ttl" usage:"how stale a cached grant, share or assignment may be when an invalidation is lost"`
	// NegativeTTL is short: a missed widening change keeps a user out for
	// that long.
	NegativeTTL time.Duration `yaml:"negative_ttl" usage:"how long a lookup that found nothing is remembered"`
	Size        int           `yaml:"size" usage:"entries cached of each kind"`
}

// Defaults fills unset fields.
func (c CacheConfig) Defaults() CacheConfig {
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *CacheConfig) SetDefaults() {
	if c.TTL == 0 {
		c.TTL = DefaultStateCacheTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultStateCacheNegativeTTL
	}
	if c.Size == 0 {
		c.Size = DefaultStateCacheSize
	}
}

// Validate checks a defaulted config.
func (c CacheConfig) Validate() error {
	switch {
	case c.TTL <= 0:
		return sidecar.Invalid("state_cache.ttl", "must be positive")
	case c.NegativeTTL <= 0:
		return sidecar.Invalid("state_cache.negative_ttl", "must be positive")
	case c.NegativeTTL > c.TTL:
		return sidecar.Invalid("state_cache.negative_ttl", "must not exceed state_cache.ttl")
	case c.Size <= 0:
		return sidecar.Invalid("state_cache.size", "must be positive")
	}
	return nil
}

// CacheObserver counts cache traffic (the metrics package implements it).
// Calls must be cheap and must not block.
type CacheObserver interface {
	Hit(kind string)
	Miss(kind string)
	Evict(kind string)
}

type nopObserver struct{}

func (nopObserver) Hit(string)   {}
func (nopObserver) Miss(string)  {}
func (nopObserver) Evict(string) {}

const cacheShards = 32

// Cache is a small, bounded, sharded cache of store lookups. Entries are
// grouped by tag — the part of an invalidation key after the cache's
// prefix, a customer id — so one invalidation ("grant:acme") drops every
// entry of that customer. Each shard is an LRU (hashicorp/golang-lru) that
// drops its oldest entry when full; Get peeks under a read lock (it does
// not reorder) and does not allocate.
type Cache[K comparable, V any] struct {
	kind   string
	prefix string // invalidation key prefix, e.g. "grant:"
	ttl    time.Duration
	negTTL time.Duration
	now    sidecar.Clock
	obs    CacheObserver
	shards [cacheShards]cacheShard[K, V]
	// deaf is set from sidecar.InvalidationsLost to the next
	// sidecar.InvalidateAll: the store does not hear what other replicas
	// narrow, so a hit is read again (see Load).
	deaf atomic.Bool
	// hears is the store's sidecar.HearingLease (nil: the store needs
	// none): while it answers false, a hit is read again too.
	hears func() bool
}

// trusted reports whether a hit may be served without asking the store:
// the store hears what other replicas narrow.
func (c *Cache[K, V]) trusted() bool {
	return !c.deaf.Load() && (c.hears == nil || c.hears())
}

// hearingOf is src's sidecar.HearingLease, or nil.
func hearingOf(src any) func() bool {
	if h, ok := src.(sidecar.HearingLease); ok {
		return h.Hears
	}
	return nil
}

type cacheShard[K comparable, V any] struct {
	mu   sync.RWMutex
	lru  *simplelru.LRU[cacheKey[K], cacheEntry[V]]
	tags map[string]map[K]struct{} // the keys held of each tag
	gen  uint64                    // bumped by every eviction, so a load that raced one is not stored
}

type cacheKey[K comparable] struct {
	tag string
	k   K
}

type cacheEntry[V any] struct {
	v       V
	found   bool
	expires int64 // unix nanos
}

// NewCache returns a cache reporting as kind and evicted by invalidation
// keys starting with prefix.
func NewCache[K comparable, V any](kind, prefix string, cfg CacheConfig, now sidecar.Clock, obs CacheObserver) *Cache[K, V] {
	cfg = cfg.Defaults()
	if now == nil {
		now = time.Now
	}
	if obs == nil {
		obs = nopObserver{}
	}
	c := &Cache[K, V]{kind: kind, prefix: prefix, ttl: cfg.TTL, negTTL: cfg.NegativeTTL, now: now, obs: obs}
	perShard := max(1, cfg.Size/cacheShards)
	for i := range c.shards {
		s := &c.shards[i]
		s.tags = map[string]map[K]struct{}{}
		// perShard is positive, the only way NewLRU fails.
		s.lru, _ = simplelru.NewLRU(perShard, s.dropped)
	}
	return c
}

// dropped keeps the tag index in step with the LRU; it runs under the
// shard's write lock (simplelru calls it from Add and Remove).
func (s *cacheShard[K, V]) dropped(key cacheKey[K], _ cacheEntry[V]) {
	m := s.tags[key.tag]
	delete(m, key.k)
	if len(m) == 0 {
		delete(s.tags, key.tag)
	}
}

func (c *Cache[K, V]) shard(tag string) *cacheShard[K, V] {
	h := uint32(2166136261) // FNV-1a, inline so hashing does not allocate
	for i := 0; i < len(tag); i++ {
		h ^= uint32(tag[i])
		h *= 16777619
	}
	return &c.shards[h%cacheShards]
}

// Get returns the cached value. hit is false when there is no entry or it
// is older than its TTL; found is false for a cached "nothing there".
func (c *Cache[K, V]) Get(tag string, k K) (v V, found, hit bool) {
	v, found, hit = c.peek(tag, k)
	if hit {
		c.obs.Hit(c.kind)
	} else {
		c.obs.Miss(c.kind)
	}
	return v, found, hit
}

// peek is Get without counting.
func (c *Cache[K, V]) peek(tag string, k K) (v V, found, hit bool) {
	s := c.shard(tag)
	s.mu.RLock()
	e, ok := s.lru.Peek(cacheKey[K]{tag, k})
	s.mu.RUnlock()
	if !ok || c.now().UnixNano() >= e.expires {
		return v, false, false
	}
	return e.v, e.found, true
}

// generation is read before a store lookup and handed to put, which drops
// the result if an eviction happened in between.
func (c *Cache[K, V]) generation(tag string) uint64 {
	s := c.shard(tag)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

func (c *Cache[K, V]) put(tag string, k K, v V, found bool, gen uint64) {
	ttl := c.ttl
	if !found {
		ttl = c.negTTL
	}
	e := cacheEntry[V]{v: v, found: found, expires: c.now().Add(ttl).UnixNano()}
	s := c.shard(tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	s.lru.Add(cacheKey[K]{tag, k}, e) // may drop the shard's oldest entry
	m := s.tags[tag]
	if m == nil {
		m = map[K]struct{}{}
		s.tags[tag] = m
	}
	m[k] = struct{}{}
}

// Load returns the cached value or calls load and caches its answer
// (found or not). Errors are returned and not cached: an entry younger
// than its TTL is served without asking the store, which is what keeps
// requests decided while the store is down; older ones need the store.
//
// While the store does not hear invalidations (deaf, or its lease on the
// bus has run out: see sidecar.HearingLease), a narrowing write
// on another replica would not drop the entry, so a hit is read through:
// the store's answer replaces it, and only a store that is unavailable
// leaves the fresh entry to decide, as during any outage. Listening, a
// hit costs no round trip.
func (c *Cache[K, V]) Load(ctx context.Context, tag string, k K, load func(context.Context) (V, bool, error)) (V, bool, error) {
	v, found, hit := c.peek(tag, k)
	if hit && c.trusted() {
		c.obs.Hit(c.kind)
		return v, found, nil
	}
	c.obs.Miss(c.kind) // a read-through asks the store too
	gen := c.generation(tag)
	nv, nfound, err := load(ctx)
	switch {
	case err == nil:
		c.put(tag, k, nv, nfound, gen)
		return nv, nfound, nil
	case hit && sidecar.ErrorCode(err) == sidecar.EUNAVAILABLE:
		return v, found, nil
	default:
		return nv, false, err
	}
}

// Evict handles an invalidation key: it drops the tag's entries when the
// key has this cache's prefix, and everything on sidecar.InvalidateAll.
// From sidecar.InvalidationsLost to the next InvalidateAll hits are read
// through (see Load).
func (c *Cache[K, V]) Evict(key string) {
	if key == sidecar.InvalidationsLost {
		c.deaf.Store(true)
		return
	}
	if key == sidecar.InvalidateAll {
		for i := range c.shards {
			s := &c.shards[i]
			s.mu.Lock()
			s.lru.Purge()
			clear(s.tags)
			s.gen++
			s.mu.Unlock()
		}
		// Heard again only after the purge: until it, hits are still
		// read through, and its new generation refuses older loads.
		c.deaf.Store(false)
		c.obs.Evict(c.kind)
		return
	}
	tag, ok := strings.CutPrefix(key, c.prefix)
	if !ok {
		return
	}
	s := c.shard(tag)
	s.mu.Lock()
	keys := s.tags[tag]
	dropped := len(keys)
	for k := range keys {
		s.lru.Remove(cacheKey[K]{tag, k}) // dropped deletes k from keys
	}
	delete(s.tags, tag)
	s.gen++ // even with nothing cached: a load may be in flight
	s.mu.Unlock()
	if dropped > 0 {
		c.obs.Evict(c.kind)
	}
}

// Len is the number of entries held, expired or not.
func (c *Cache[K, V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += s.lru.Len()
		s.mu.RUnlock()
	}
	return n
}

// CachedSource is what CachedState reads through: the store's partner and
// reseller lookups and its invalidations.
type CachedSource interface {
	EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error)
	SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error)
	GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error)
	GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error)
	Subscribe(fn func(key string)) (cancel func())
}

type grantCacheKey struct{ org, user string }

// CachedState puts local caches in front of the grant, share and
// assignment lookups of the check path, evicted on every replica by the
// store's invalidations. It satisfies the lookups the on-behalf resolver
// needs. Values it returns are shared: callers must not modify them.
type CachedState struct {
	src    CachedSource
	now    sidecar.Clock
	grants *Cache[grantCacheKey, sidecar.EffectiveGrants]
	shares *Cache[grantCacheKey, []string]
	assign *Cache[struct{}, *sidecar.Assignment]
	// customers holds each customer's profile, staff mark and other
	// spellings, filed under the folded id (sidecar.FoldID) and keyed by
	// the id as asked, evicted by the key of any spelling, which a
	// profile's put or delete and a staff mark publish: protecting
	// "staff-1" drops what "STAFF-1" read too.
	customers *Cache[string, *sidecar.CustomerState]
	cancel    func()
}

// NewCachedState subscribes to src's invalidations; Close unsubscribes.
func NewCachedState(src CachedSource, cfg CacheConfig, now sidecar.Clock, obs CacheObserver) *CachedState {
	if now == nil {
		now = time.Now
	}
	cs := &CachedState{
		src:       src,
		now:       now,
		grants:    NewCache[grantCacheKey, sidecar.EffectiveGrants](CacheGrants, sidecar.GrantKey(""), cfg, now, obs),
		shares:    NewCache[grantCacheKey, []string](CacheShares, sidecar.ShareKey(""), cfg, now, obs),
		assign:    NewCache[struct{}, *sidecar.Assignment](CacheAssignments, sidecar.AssignmentKey(""), cfg, now, obs),
		customers: NewCache[string, *sidecar.CustomerState](CacheCustomers, sidecar.CustomerKey(""), cfg, now, obs),
	}
	hears := hearingOf(src)
	cs.grants.hears, cs.shares.hears, cs.assign.hears, cs.customers.hears = hears, hears, hears, hears
	cs.cancel = src.Subscribe(cs.Evict)
	return cs
}

// Evict drops the entries an invalidation key names.
func (cs *CachedState) Evict(key string) {
	cs.grants.Evict(key)
	cs.shares.Evict(key)
	cs.assign.Evict(key)
	if c, ok := strings.CutPrefix(key, sidecar.CustomerKey("")); ok {
		key = sidecar.CustomerKey(sidecar.FoldID(c))
	}
	cs.customers.Evict(key)
}

// Close stops listening for invalidations.
func (cs *CachedState) Close() error {
	if cs.cancel != nil {
		cs.cancel()
	}
	return nil
}

// EffectiveGrants is the store's EffectiveGrants through the cache. A
// cached grant that expired meanwhile is dropped at read time, so expiry
// never waits for the TTL.
func (cs *CachedState) EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error) {
	eg, _, err := cs.grants.Load(ctx, customer, grantCacheKey{partnerOrg, user}, func(ctx context.Context) (sidecar.EffectiveGrants, bool, error) {
		eg, err := cs.src.EffectiveGrants(ctx, customer, partnerOrg, user)
		return eg, eg.Individual != nil || eg.Organisation != nil, err
	})
	if err != nil {
		return sidecar.EffectiveGrants{}, err
	}
	now := cs.now()
	if !eg.Individual.Live(now) {
		eg.Individual = nil
	}
	if !eg.Organisation.Live(now) {
		eg.Organisation = nil
	}
	return eg, nil
}

// SharesFor is the store's SharesFor through the cache.
func (cs *CachedState) SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error) {
	v, _, err := cs.shares.Load(ctx, customer, grantCacheKey{partnerOrg, user}, func(ctx context.Context) ([]string, bool, error) {
		v, err := cs.src.SharesFor(ctx, customer, partnerOrg, user)
		return v, len(v) > 0, err
	})
	return v, err
}

// GetAssignment is the store's GetAssignment through the cache; an
// unassigned customer is ENOTFOUND, as from the store. Entries are kept
// under the folded id, as the store files them and as AssignmentKey
// evicts them: every spelling of a customer reads, and drops, one entry.
func (cs *CachedState) GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error) {
	a, found, err := cs.assign.Load(ctx, sidecar.FoldID(customer), struct{}{}, func(ctx context.Context) (*sidecar.Assignment, bool, error) {
		a, err := cs.src.GetAssignment(ctx, customer)
		if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
			return nil, false, nil
		}
		return a, a != nil, err
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errNoAssignment
	}
	return a, nil
}

// errNoAssignment is shared so a cached negative answer does not allocate.
var errNoAssignment = sidecar.Errorf(sidecar.ENOTFOUND, "assignment not found")

// GetCustomerState is the store's GetCustomerState through the cache, for
// the customer's protection: its profile and staff mark. The consent is
// left out (nil): it is evicted by another key, which this cache does not
// hear. A customer with neither a profile nor a staff mark is remembered
// for the negative TTL only.
func (cs *CachedState) GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error) {
	v, _, err := cs.customers.Load(ctx, sidecar.FoldID(customer), customer, func(ctx context.Context) (*sidecar.CustomerState, bool, error) {
		st, err := cs.src.GetCustomerState(ctx, customer)
		if err != nil {
			return nil, false, err
		}
		v := &sidecar.CustomerState{Customer: st.Customer, Staff: st.Staff, Spellings: st.Spellings}
		return v, v.Customer != nil || v.Staff || len(v.Spellings) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = &sidecar.CustomerState{}
	}
	return v, nil
}
