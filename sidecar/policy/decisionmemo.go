package policy

import (
	"context"
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A decision query whose rules depend on input and the activation's base
// data alone keeps its answers across checks: a check whose input, as the
// query reads it, is the same as an earlier check's gets that check's
// value without evaluating. The pipeline hands the query only the part of
// input it can read (InputNeeds), so two requests that differ only where
// the policy never looks share an answer, and two that differ anywhere it
// does look do not.
//
// That is sound only for a pure query, which purity checks when the
// activation is built, with reads of input allowed: no builtin that may
// answer alike arguments differently (the clock, the network, the host),
// no `with`, nothing that acts (print). Base data never changes within an
// activation, and a new activation starts with an empty memo, so a
// narrowed rule takes effect at the next check. Delegation state reaches
// policy through input (the resolver reads it on every check), so a
// revoked grant or consent is a different input, never a kept answer.
//
// Inputs are compared by an encoding that keeps every distinction OPA can
// see: each value's type, a string's bytes, a number's spelling (1 and
// 1.0 are kept apart, though OPA calls them equal), arrays in order and
// objects by sorted key. An input holding anything else (a set) is never
// kept. The memo weighs at most decisionMemoBytes; past that it starts
// afresh, so inputs a client chooses cost only the misses they cause. A
// memo is judged on every decisionMemoTrial lookups: when fewer than one
// in 16 of them found an answer (the query reads a request id, or a
// crawler is asking for page after page), it stops keeping answers for
// the next decisionMemoRest checks, which then pay nothing for it, and
// tries again.
//
// One builtin that reads the clock is allowed: io.jwt.decode_verify,
// which Deputy answers through jwtVerdicts. Its answer for a token and
// constraints changes only at the token's nbf and exp, and jwtVerdicts
// knows, for every verdict it uses, the window within which OPA gives it
// alike. An evaluation collects the intersection of the windows of the
// verdicts it used (jwtWindow), and its answer is kept for that window
// only: an expired token is never answered from memory. An evaluation
// whose verification could not be bounded (a refusal, an error, a token
// too long to remember, a fixed "time" constraint) keeps nothing.
type decisionMemo struct {
	mu      sync.RWMutex
	entries map[string]keptAnswer
	bytes   int
	// verifies is set when the query may verify tokens: its answers hold
	// within their windows only, judged by clock, the time the lookup and
	// the evaluation share.
	verifies bool
	clock    func() time.Time

	// The current trial's lookups and hits, and the checks evaluated
	// since it was turned off. Counted without a lock: a trial judged
	// on a count off by a few is judged alike.
	trialLookups, trialHits, resting atomic.Int64
	off                              atomic.Bool
	total                            *memoCounts // the engine's, for its metrics
}

// keptAnswer is an answer and the times (nanoseconds since the epoch)
// within which it holds: from <= now < until.
type keptAnswer struct {
	value       *ast.Term
	from, until int64
}

// always is the window of an answer that verified no token.
var always = keptAnswer{from: math.MinInt64, until: math.MaxInt64}

// holdsAt reports whether the answer holds at now; an answer of a memo
// that verifies nothing holds always.
func (k keptAnswer) holdsAt(now int64) bool { return k.from <= now && now < k.until }

// jwtWindow collects, over one evaluation, the times within which every
// token the evaluation verified is verified alike: the intersection of
// the windows of the verdicts it used. ok turns false when a verification
// could not be bounded.
type jwtWindow struct {
	from, until int64
	ok          bool
}

type jwtWindowKey struct{}

// windowOf returns the window an evaluation under ctx collects, or nil.
func windowOf(ctx context.Context) *jwtWindow {
	if ctx == nil {
		return nil
	}
	w, _ := ctx.Value(jwtWindowKey{}).(*jwtWindow)
	return w
}

// narrow intersects w with a verdict's window.
func (w *jwtWindow) narrow(from, until int64) {
	w.from, w.until = max(w.from, from), min(w.until, until)
}

// memoCounts counts lookups and hits of every decision memo of an engine.
type memoCounts struct{ lookups, hits atomic.Uint64 }

func (c *memoCounts) add(hit bool) {
	c.lookups.Add(1)
	if hit {
		c.hits.Add(1)
	}
}

const (
	decisionMemoBytes  = 1 << 20 // what the kept inputs and answers may weigh together
	decisionMemoMaxKey = 4096    // an input encoding to more is not kept
	decisionMemoTrial  = 4096    // lookups a memo is judged on
	decisionMemoRest   = 65536   // checks a memo that found almost nothing sits out
	decisionMemoEntry  = 144     // what an entry costs the map beyond its key's bytes, roughly
)

// memoKeys holds encoders with their buffers: a check's key costs no
// allocation.
var memoKeys = sync.Pool{New: func() any { return newKeyEncoder() }}

// evalKept answers input from d's memo, or evaluates it and keeps the
// answer when the evaluation succeeds with a value.
func (a *Activation) evalKept(ctx context.Context, d *directQuery, input ast.Value) (*ast.Term, error) {
	m := d.memo
	if m.off.Load() {
		if m.resting.Add(1) == decisionMemoRest {
			m.trialLookups.Store(0)
			m.trialHits.Store(0)
			m.off.Store(false)
		}
		return a.evalDirect(ctx, d, input)
	}
	enc := memoKeys.Get().(*keyEncoder)
	defer memoKeys.Put(enc)
	key, ok := enc.encode(input)
	if !ok {
		return a.evalDirect(ctx, d, input)
	}
	var at time.Time
	var now int64
	if m.verifies {
		at = m.clock()
		now = at.UnixNano()
	}
	m.mu.RLock()
	kept, found := m.entries[string(key)]
	m.mu.RUnlock()
	n := m.trialLookups.Add(1)
	if found && kept.holdsAt(now) && !(doneCancel{ctx.Done()}).Cancelled() {
		// An ended check is refused as its evaluation would be.
		m.trialHits.Add(1)
		m.total.add(true)
		return kept.value, nil
	}
	m.total.add(false)
	if n == decisionMemoTrial {
		m.judge()
	}
	answer, evalCtx := always, ctx
	var w *jwtWindow
	if m.verifies {
		w = &jwtWindow{from: math.MinInt64, until: math.MaxInt64, ok: true}
		evalCtx = context.WithValue(ctx, jwtWindowKey{}, w)
	}
	v, err := a.evalDirectAt(evalCtx, d, input, at)
	if err != nil || v == nil || m.off.Load() {
		return v, err
	}
	if w != nil {
		if !w.ok || !(w.from <= now && now < w.until) {
			return v, nil
		}
		answer.from, answer.until = w.from, w.until
	}
	answer.value = v
	m.keep(key, answer, now)
	return v, nil
}

// judge ends a trial: a memo that answered fewer than one in 16 of its
// lookups is emptied and turned off for decisionMemoRest checks; any
// other starts the next trial.
func (m *decisionMemo) judge() {
	if m.trialHits.Load() >= decisionMemoTrial/16 {
		m.trialLookups.Store(0)
		m.trialHits.Store(0)
		return
	}
	m.resting.Store(0)
	m.off.Store(true)
	m.mu.Lock()
	m.entries, m.bytes = nil, 0
	m.mu.Unlock()
}

// keep stores a copy of answer for key: the answer may share terms with
// the check's input, which the pipeline does not keep. An answer that no
// longer holds at now gives way to the new one.
func (m *decisionMemo) keep(key []byte, answer keptAnswer, now int64) {
	w, ok := heapWeight(answer.value.Value, 0)
	if !ok {
		return
	}
	weight := len(key) + w + decisionMemoEntry
	answer.value = answer.value.Copy()
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, seen := m.entries[string(key)]; (seen && old.holdsAt(now)) || m.off.Load() {
		return
	}
	if m.entries == nil || m.bytes+weight > decisionMemoBytes {
		m.entries, m.bytes = make(map[string]keptAnswer, 256), 0
	}
	m.entries[string(key)] = answer
	m.bytes += weight
}

// heapWeight estimates what a copy of v (ast.Term.Copy) holds on the
// heap, from the layout of OPA's values: an object its struct, its
// index map and a key, a value and an entry per element; an array its
// struct and a term, a pointer and a hash per element; a string or
// number its bytes (a copy shares them with the original, which the
// memo then keeps alive). A value nested deeper than 32 levels, or of
// another kind, is not weighed and not kept.
func heapWeight(v ast.Value, depth int) (int, bool) {
	if depth > 32 {
		return 0, false
	}
	switch v := v.(type) {
	case ast.String:
		return 16 + len(v), true
	case ast.Number:
		return 16 + len(v), true
	case ast.Boolean, ast.Null:
		return 0, true
	case *ast.Array:
		w := 64 + 48*v.Len()
		for i := 0; i < v.Len(); i++ {
			e, ok := heapWeight(v.Elem(i).Value, depth+1)
			if !ok {
				return 0, false
			}
			w += e
		}
		return w, true
	case ast.Object:
		w, ok := 160+88*v.Len(), true
		v.Until(func(k, e *ast.Term) bool {
			kw, kok := heapWeight(k.Value, depth+1)
			ew, eok := heapWeight(e.Value, depth+1)
			w, ok = w+kw+ew, kok && eok
			return !ok
		})
		return w, ok
	}
	return 0, false
}

// keyEncoder writes a value's key: a type tag, then a string's or
// number's length and bytes, or an array's or object's length and
// elements (an object's in sorted key order). Two values encode alike
// only if OPA cannot tell them apart; a value of another kind (a set)
// does not encode, nor does one whose key would pass decisionMemoMaxKey
// (the encoder stops there: a large body the policy reads costs no more
// than the limit).
type keyEncoder struct {
	b    []byte
	ok   bool
	pair func(k, v *ast.Term) bool // e.visit, bound once: a closure per object would cost an allocation
}

func newKeyEncoder() *keyEncoder {
	e := &keyEncoder{b: make([]byte, 0, 1024)}
	e.pair = e.visit
	return e
}

// encode returns v's key, valid until the next encode, and whether v
// encodes.
func (e *keyEncoder) encode(v ast.Value) ([]byte, bool) {
	e.b, e.ok = e.b[:0], true
	e.value(v)
	return e.b, e.ok && len(e.b) <= decisionMemoMaxKey
}

func (e *keyEncoder) visit(k, v *ast.Term) bool {
	e.value(k.Value)
	e.value(v.Value)
	return !e.ok
}

func (e *keyEncoder) value(v ast.Value) {
	if !e.ok || len(e.b) > decisionMemoMaxKey {
		e.ok = false
		return
	}
	switch v := v.(type) {
	case ast.String:
		e.b = binary.AppendUvarint(append(e.b, 's'), uint64(len(v)))
		e.b = append(e.b, v...)
	case ast.Number:
		e.b = binary.AppendUvarint(append(e.b, 'n'), uint64(len(v)))
		e.b = append(e.b, v...)
	case ast.Boolean:
		if v {
			e.b = append(e.b, 't')
		} else {
			e.b = append(e.b, 'f')
		}
	case ast.Null:
		e.b = append(e.b, 'z')
	case *ast.Array:
		e.b = binary.AppendUvarint(append(e.b, 'a'), uint64(v.Len()))
		for i := 0; i < v.Len() && e.ok; i++ {
			e.value(v.Elem(i).Value)
		}
	case ast.Object:
		e.b = binary.AppendUvarint(append(e.b, 'o'), uint64(v.Len()))
		v.Until(e.pair)
	default:
		e.ok = false
	}
}

// pureQuery reports whether every rule query may name depends on input
// and base data alone (see purity), and whether it may verify tokens:
// with tokens, through Deputy's io.jwt.decode_verify, whose verdicts
// jwtVerdicts bounds in time.
func pureQuery(c *ast.Compiler, query string, tokens bool) (pure, verifies bool) {
	ref, err := ast.ParseRef(query)
	if err != nil || !ref.IsGround() {
		return false, false
	}
	p := newPurity(c)
	p.input, p.tokens = true, tokens
	if p.rules(ref) != nil {
		return false, false
	}
	return true, p.verifies
}
