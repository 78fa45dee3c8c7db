package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Per-evaluation caches of OPA, kept in pools. OPA builds fresh ones for
// every evaluation: some thirty allocations a check does not need to pay.

// virtualCache is topdown.VirtualCache (the per-evaluation cache of rule
// values) kept in a pool: OPA builds a fresh one for every evaluation,
// about twenty allocations that a check does not need to pay. Frames are
// maps from a reference's hash to the entries with that hash, the first
// held in the map itself, so caching a rule's value allocates nothing.
type virtualCache struct {
	frames []map[int]cacheSlot
	depth  int
	opt    rego.EvalOption // hands this cache to an evaluation, built once
	memo   *memo           // the activation's memoized functions, read in the base frame
	found  []memoEntry     // results for memo, kept once the evaluation succeeds
	// keys backs the entries' keys: copies of the references OPA hands
	// Put, which for a function call are a buffer it writes again (see
	// Put). One array for the evaluation, reused with the cache.
	keys []*ast.Term
}

type cacheEntry struct {
	ref       ast.Ref
	value     *ast.Term
	undefined bool
}

// cacheSlot holds the entries of one hash: almost always one.
type cacheSlot struct {
	first cacheEntry
	more  []cacheEntry
}

// find returns the entry of ref in the slot, or nil.
func (s *cacheSlot) find(ref ast.Ref) *cacheEntry {
	if s.first.ref.Equal(ref) {
		return &s.first
	}
	for i := range s.more {
		if s.more[i].ref.Equal(ref) {
			return &s.more[i]
		}
	}
	return nil
}

var _ topdown.VirtualCache = (*virtualCache)(nil)

var virtualCaches = sync.Pool{New: func() any {
	c := &virtualCache{}
	c.Push()
	c.opt = rego.EvalVirtualCache(c)
	return c
}}

func getVirtualCache() *virtualCache { return virtualCaches.Get().(*virtualCache) }

// release empties the cache, dropping every reference to evaluation
// results, and returns it to the pool.
func (c *virtualCache) release() {
	for i := 0; i < c.depth; i++ {
		clear(c.frames[i])
	}
	clear(c.found)
	clear(c.keys)
	c.depth, c.memo, c.found, c.keys = 1, nil, c.found[:0], c.keys[:0]
	virtualCaches.Put(c)
}

// keepFound hands the memoized functions' results of an evaluation that
// finished without error to the activation's memo.
func (c *virtualCache) keepFound() {
	if len(c.found) > 0 {
		c.memo.keep(c.found)
	}
}

// Push starts an empty frame (OPA does this for `with` modifiers).
func (c *virtualCache) Push() {
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, map[int]cacheSlot{})
	}
	c.depth++
}

// Pop drops the top frame and its entries.
func (c *virtualCache) Pop() {
	c.depth--
	clear(c.frames[c.depth])
}

func (c *virtualCache) top() map[int]cacheSlot { return c.frames[c.depth-1] }

// Get follows topdown's contract: (value, false) when cached, (nil, true)
// when cached as undefined, (nil, false) when not cached.
// A call to a memoized function not yet made in this evaluation is looked
// up in the activation's memo, but only in the base frame: under a `with`
// modifier the function may see other data.
func (c *virtualCache) Get(ref ast.Ref) (*ast.Term, bool) {
	h := ref.Hash()
	if s, ok := c.top()[h]; ok {
		if e := s.find(ref); e != nil {
			return e.value, e.undefined
		}
	}
	if c.depth == 1 && c.memo.covers(ref) {
		if v := c.memo.get(h, ref); v != nil {
			return v, false
		}
	}
	return nil, false
}

// Put records the value of ref; a nil value records it as undefined.
// The value of a call to a memoized function, made in the base frame, is
// also noted for the activation's memo (see keepFound).
func (c *virtualCache) Put(ref ast.Ref, value *ast.Term) {
	m, h := c.top(), ref.Hash()
	if c.depth == 1 && c.memo.covers(ref) {
		if e, ok := memoEntryOf(ref, value); ok {
			c.found = append(c.found, e)
		}
	}
	// The key is copied: for a function call OPA hands the argument buffer
	// of a pooled frame, which its next call overwrites with its own
	// arguments; kept as is, the stored key would equal whatever is looked
	// up next, and f(b, a), which hashes as f(a, b) does, would be answered
	// with f(a, b)'s value. The terms themselves are not written again.
	// The copy is a capped slice of keys, so no later copy writes into it.
	start := len(c.keys)
	c.keys = append(c.keys, ref...)
	entry := cacheEntry{ref: c.keys[start:len(c.keys):len(c.keys)], value: value, undefined: value == nil}
	s, ok := m[h]
	switch {
	case !ok:
		s.first = entry
	case s.find(ref) != nil:
		*s.find(ref) = entry
	default:
		s.more = append(s.more, entry)
	}
	m[h] = s
}

// Keys returns the references with a value in the top frame.
func (c *virtualCache) Keys() []ast.Ref {
	var keys []ast.Ref
	for _, s := range c.top() {
		if s.first.value != nil {
			keys = append(keys, s.first.ref)
		}
		for _, e := range s.more {
			if e.value != nil {
				keys = append(keys, e.ref)
			}
		}
	}
	return keys
}

// baseCache is topdown.BaseCache (data read from the store during one
// evaluation), pooled. As OPA's, a lookup is answered by the shortest
// cached prefix of the reference.
//
// root is the activation's whole base data (less data.system, as OPA
// reads the root): an activation's store never changes, so every read
// below it is answered from the tree already in memory, as a warm cache
// would answer it, instead of a store read that builds a storage path
// and a term per key (some five allocations per rule that reads data).
type baseCache struct {
	root    ast.Value
	entries map[int][]baseEntry
	opt     rego.EvalOption // hands this cache to an evaluation, built once
}

type baseEntry struct {
	ref   ast.Ref
	value ast.Value
}

var _ topdown.BaseCache = (*baseCache)(nil)

var baseCaches = sync.Pool{New: func() any {
	c := &baseCache{entries: map[int][]baseEntry{}}
	c.opt = rego.EvalBaseCache(c)
	return c
}}

func getBaseCache() *baseCache { return baseCaches.Get().(*baseCache) }

func (c *baseCache) release() {
	c.root = nil
	clear(c.entries)
	baseCaches.Put(c)
}

// Get returns the value at ref, found under the shortest cached prefix.
func (c *baseCache) Get(ref ast.Ref) ast.Value {
	if c.root != nil && len(ref) > 0 && ref[0].Equal(ast.DefaultRootDocument) {
		if len(ref) == 1 {
			return c.root
		}
		if v, err := c.root.Find(ref[1:]); err == nil {
			return v
		}
	}
	for i := 1; i <= len(ref); i++ {
		prefix := ref[:i]
		for _, e := range c.entries[prefix.Hash()] {
			if !e.ref.Equal(prefix) {
				continue
			}
			if i == len(ref) {
				return e.value
			}
			v, err := e.value.Find(ref[i:])
			if err != nil {
				return nil
			}
			return v
		}
	}
	return nil
}

// Put records the value read at ref.
func (c *baseCache) Put(ref ast.Ref, value ast.Value) {
	h := ref.Hash()
	entries := c.entries[h]
	for i := range entries {
		if entries[i].ref.Equal(ref) {
			entries[i].value = value
			return
		}
	}
	c.entries[h] = append(entries, baseEntry{ref: ref, value: value})
}
