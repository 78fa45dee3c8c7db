package policy

import (
	"context"
	"encoding/json"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"
)

// baseStore is the activation's store as its direct evaluations read it.
// The base cache (see baseCache) answers every read of data that exists
// from the tree in memory, so what still reaches the store is a read of
// data that does not: a rule testing for a key (protected_customers[0]
// of an empty list, forbidden_routes[section] for a section with no
// routes). The in-memory store answers those with a not-found error built
// for the read, after boxing every key of the path: some six allocations
// a miss, a dozen on every impersonated check. baseStore finds a missing
// path in the activation's base data (JSON's maps and lists, read without
// allocating) and answers it with one shared not-found error, which OPA
// reads as undefined as it reads the store's. Every other read, and
// anything under data.system (kept in the store only), goes to the store.
type baseStore struct {
	storage.Store
	data map[string]any
}

// errMissing is the store's answer for a path that names nothing: OPA
// tests it with storage.IsNotFound and never keeps or prints it.
var errMissing = &storage.Error{Code: storage.NotFoundErr, Message: "document missing"}

func (s baseStore) Read(ctx context.Context, txn storage.Transaction, path storage.Path) (any, error) {
	if len(path) > 0 && path[0] != "system" && missing(s.data, path) {
		return nil, errMissing
	}
	return s.Store.Read(ctx, txn, path)
}

// missing reports whether path names nothing in data. It says false when
// it cannot tell (a Go value other than JSON's maps and lists on the way),
// so the store decides.
func missing(data map[string]any, path storage.Path) bool {
	var node any = data
	for _, key := range path {
		switch n := node.(type) {
		case map[string]any:
			v, ok := n[key]
			if !ok {
				return true
			}
			node = v
		case []any:
			// The store's own rule for a list index.
			i, ok := util.Atoi(key)
			if !ok || i < 0 || i >= len(n) {
				return true
			}
			node = n[i]
		case string, bool, json.Number, float64, nil:
			return true // a scalar has nothing below it
		default:
			return false
		}
	}
	return false
}
