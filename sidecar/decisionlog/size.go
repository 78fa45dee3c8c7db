package decisionlog

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// Memory a queued decision holds, as counted against
// decision_log.max_queue_bytes. It is an estimate from what the decision
// holds, not its encoded size: records are encoded by the writer, off the
// request path, and encoding in Log to learn a size would put that cost
// back on every check. The estimate walks the input once without
// allocating, adding each string's bytes and a fixed cost per value for
// its term, interface and map entry. It errs high: terms the input shares
// with the policy activation are counted as if the record held them alone.
const (
	// decisionOverhead is the Decision, its Identity and Delegation and
	// their short strings: a shipped-policy check without input holds
	// about 260 bytes of heap while queued.
	decisionOverhead = 256
	// valueOverhead is one value of the input besides its string bytes:
	// an *ast.Term and its ast.Value, or an interface and a map entry.
	valueOverhead = 48
)

// decisionSize estimates the memory d holds while queued.
// The input counts whether or not records keep it: the decision holds it
// until the writer takes it.
func decisionSize(d *sidecar.Decision) int64 {
	n := int64(decisionOverhead + len(d.ID) + len(d.Reason) + len(d.Error) +
		len(d.Method) + len(d.Host) + len(d.Path) + len(d.TraceID) + len(d.Revision))
	if d.Input != nil {
		s := sizers.Get().(*sizer)
		s.n = 0
		s.any(d.Input)
		n += s.n
		sizers.Put(s)
	}
	return n
}

// sizer walks an input; pooled because its bound method values (passed
// to Foreach) would otherwise be allocated on each check.
type sizer struct {
	n      int64
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
		s.n += int64(len(v))
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
		s.n += int64(len(x))
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
