package decisionlog

import (
	"sync"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// Memory a queued decision holds, as counted against
// decision_log.max_queue_bytes. It is an estimate from what the decision
// holds, not its encoded size: records are encoded by the writer, off the
// request path, and encoding in Log to learn a size would put that cost
// back on every check. The estimate walks the input once without
// allocating, adding each string's bytes and a fixed cost per value for
// its term, interface and map entry. A string whose bytes lie within the
// last string counted shares its memory and adds none of them:
// input.deputy.request.route_dirs holds the route from each of its
// segments on, every one a slice of one string, and counted whole they
// made a path of n segments weigh n²/2 bytes it does not hold (a 5.6 KB
// path passed the default bound). It still errs high: terms the input
// shares with the policy activation are counted as if the record held
// them alone. The walk reads objects through Foreach, which sorts an
// object's members the first time it is walked: the JSON body, the one
// part of an input a client can make wide, is built with its members in
// that order (authz's jsonValue), so that sorting it is one pass, not
// n log n comparisons on the check's goroutine.
const (
	// decisionOverhead is the Decision, its Identity and Delegation and
	// their short strings: a shipped-policy check without input holds
	// about 260 bytes of heap while queued.
	decisionOverhead = 256
	// valueOverhead is one value of the input besides its string bytes:
	// an *ast.Term and its ast.Value, or an interface and a map entry.
	valueOverhead = 48
)

// decisionSize estimates the memory d holds while queued, but for its
// input (inputSize).
func decisionSize(d *sidecar.Decision) int64 {
	return int64(decisionOverhead + len(d.ID) + len(d.Reason) + len(d.Error) +
		len(d.Method) + len(d.Host) + len(d.Path) + len(d.TraceID) + len(d.Revision))
}

// inputSize estimates the memory a decision's input holds. It counts
// whether or not records keep the input: the decision holds it until the
// writer takes it.
func inputSize(in any) int64 {
	if in == nil {
		return 0
	}
	s := sizers.Get().(*sizer)
	s.n, s.lo, s.hi = 0, 0, 0
	s.any(in)
	n := s.n
	s.lo, s.hi = 0, 0 // hold no address of the input in the pool
	sizers.Put(s)
	return n
}

// sizer walks an input; pooled because its bound method values (passed
// to Foreach) would otherwise be allocated on each check.
type sizer struct {
	n      int64
	lo, hi uintptr // the bytes of the last string counted
	member func(k, v *ast.Term)
	elem   func(t *ast.Term)
}

var sizers = sync.Pool{New: func() any {
	s := &sizer{}
	s.member = s.walkMember
	s.elem = s.walkElem
	return s
}}

func (s *sizer) walkMember(k, v *ast.Term) {
	s.value(k.Value)
	s.value(v.Value)
}

func (s *sizer) walkElem(t *ast.Term) { s.value(t.Value) }

func (s *sizer) any(in any) {
	s.n += valueOverhead
	switch v := in.(type) {
	case ast.Value:
		s.n -= valueOverhead
		s.value(v)
	case *ast.Term:
		if v != nil {
			s.n -= valueOverhead
			s.value(v.Value)
		}
	case string:
		s.str(v)
	case map[string]any:
		for k, e := range v {
			s.n += int64(len(k))
			s.any(e)
		}
	case []any:
		for _, e := range v {
			s.any(e)
		}
	}
}

func (s *sizer) value(v ast.Value) {
	s.n += valueOverhead
	switch x := v.(type) {
	case ast.String:
		s.str(string(x))
	case ast.Number:
		s.n += int64(len(x))
	case *ast.Array:
		for i := range x.Len() {
			s.value(x.Elem(i).Value)
		}
	case ast.Object:
		x.Foreach(s.member)
	case ast.Set:
		x.Foreach(s.elem)
	}
}

// str counts v's bytes unless they lie within those of the last string
// counted: then both are slices of one string, held once.
func (s *sizer) str(v string) {
	if v == "" {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.StringData(v)))
	hi := lo + uintptr(len(v))
	if lo >= s.lo && hi <= s.hi {
		return
	}
	s.n += int64(len(v))
	s.lo, s.hi = lo, hi
}
