package memory

import (
	"slices"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// window keeps values in the order of the time each was kept at, for
// sidecar.AppendOnceWindow: the consents set and the lapses taken, which
// sweeps read back, and the sessions ended.
type window[T any] []timed[T]

// timed is a value and the time it was kept at.
type timed[T any] struct {
	at time.Time
	v  T
}

// keep forgets the values past the window at now, oldest first (they are
// a prefix), and keeps vs at at, after every value kept at at or before:
// one kept at an earlier time goes in its place.
func (w *window[T]) keep(now, at time.Time, vs ...T) {
	n := 0
	for n < len(*w) && now.Sub((*w)[n].at) >= sidecar.AppendOnceWindow {
		n++
	}
	clear((*w)[:n])
	*w = (*w)[n:]
	k, _ := slices.BinarySearchFunc(*w, at, func(e timed[T], t time.Time) int {
		if e.at.After(t) {
			return 1
		}
		return -1
	})
	kept := make([]timed[T], len(vs))
	for i, v := range vs {
		kept[i] = timed[T]{at: at, v: v}
	}
	*w = slices.Insert(*w, k, kept...)
}

// keepOnce keeps v at at as keep does, unless a value same as v is kept at
// at already: a write made again as it was (a retry keeping its first
// time) is one write, as Redis keeps it as one member of a sorted set.
func (w *window[T]) keepOnce(now, at time.Time, v T, same func(a, b T) bool) {
	k, _ := slices.BinarySearchFunc(*w, at, func(e timed[T], t time.Time) int {
		if e.at.Before(t) {
			return -1
		}
		return 1
	}) // the first kept not before at
	for _, e := range (*w)[k:] {
		if !e.at.Equal(at) {
			break
		}
		if same(e.v, v) {
			w.keep(now, at) // forgets what is past the window all the same
			return
		}
	}
	w.keep(now, at, v)
}

// since returns the values kept at since or after, within the window of
// now (one kept at its edge is past it), oldest first.
func (w window[T]) since(now, since time.Time) []T {
	if edge := now.Add(-sidecar.AppendOnceWindow); !since.After(edge) {
		since = edge.Add(time.Nanosecond)
	}
	k, _ := slices.BinarySearchFunc(w, since, func(e timed[T], t time.Time) int {
		if e.at.Before(t) {
			return -1
		}
		return 1
	}) // the first kept not before since
	out := make([]T, 0, len(w)-k)
	for _, e := range w[k:] {
		out = append(out, e.v)
	}
	return out
}
