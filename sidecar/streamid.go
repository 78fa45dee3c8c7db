package sidecar

import (
	"strconv"
	"strings"
)

// StreamID is a stream entry id as Redis makes them, <ms>-<seq>; the
// memory store makes the same, so cursors look alike in both stores, and
// a read that merges two streams (the audit trail's) orders by it.
type StreamID struct{ MS, Seq uint64 }

// ParseStreamID reads an id or a cursor; a malformed one is EINVALID on
// the field "cursor", where callers take it from.
func ParseStreamID(s string) (StreamID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return StreamID{}, Invalid("cursor", "malformed cursor")
	}
	return StreamID{a, b}, nil
}

func (id StreamID) String() string {
	return strconv.FormatUint(id.MS, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// Less orders ids as their stream does.
func (id StreamID) Less(o StreamID) bool { return id.MS < o.MS || (id.MS == o.MS && id.Seq < o.Seq) }
