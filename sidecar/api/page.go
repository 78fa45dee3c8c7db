package api

import (
	"encoding/base64"
	"net/url"
	"strconv"

	"github.com/deputyhq/deputy/sidecar"
)

// Page is a cursor window requested with ?limit=&cursor=.
type Page struct {
	Limit  int
	Cursor string // opaque, as the previous page returned it
}

// maxCursor bounds what a client may send back as a cursor.
const maxCursor = 1024

// ParsePage reads limit and cursor. A missing limit is def; a limit above
// max is refused rather than silently clipped, so clients notice.
func ParsePage(q url.Values, def, max int) (Page, error) {
	p := Page{Limit: def}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, sidecar.Invalid("limit", "must be a positive integer")
		}
		if n > max {
			return p, sidecar.Invalid("limit", "must be at most %d", max)
		}
		p.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		if len(s) > maxCursor {
			return p, sidecar.Invalid("cursor", "malformed cursor")
		}
		p.Cursor = s
	}
	return p, nil
}

// List is the JSON shape of every paginated answer.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Paginate returns the window of in-memory items (sorted ascending by key)
// after the page's cursor, and the cursor of the next window ("" on the
// last one). Keys must be unique; a cursor stays valid when items are added
// or removed.
func Paginate[T any](items []T, key func(T) string, p Page) (List[T], error) {
	start := 0
	if p.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
		if err != nil || len(b) == 0 {
			return List[T]{}, sidecar.Invalid("cursor", "malformed cursor")
		}
		last := string(b)
		start = len(items)
		for i, it := range items {
			if key(it) > last {
				start = i
				break
			}
		}
	}
	limit := p.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	end := min(start+limit, len(items))
	out := List[T]{Items: items[start:end]}
	if out.Items == nil {
		out.Items = []T{}
	}
	if end < len(items) && end > start {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(key(items[end-1])))
	}
	return out, nil
}
