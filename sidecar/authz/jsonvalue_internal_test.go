package authz

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
)

// A JSON body is converted by jsonValue, which inserts each object's
// members in key order, where it was by ast.InterfaceToValue: the value
// is the same, and so is what the decision log counts it as weighing
// against decision_log.max_queue_bytes.
func TestJSONValueAsInterfaceToValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 3))
	for i := range 500 {
		doc := randomJSON(rng, 4)
		if i%50 == 0 {
			doc = wideJSON(rng.IntN(3000))
		}
		var x any
		if err := util.UnmarshalJSON([]byte(doc), &x); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		got, err := jsonValue(x)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ast.InterfaceToValue(x)
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(want) != 0 {
			t.Fatalf("%s:\ngot  %v\nwant %v", doc, got, want)
		}
		if g, w := queuedBytes(t, got), queuedBytes(t, want); g != w {
			t.Fatalf("%s: weighs %d bytes queued, was %d", doc, g, w)
		}
	}
}

// queuedBytes is what a decision whose input is v weighs in the decision
// log's queue.
func queuedBytes(t *testing.T, v ast.Value) int64 {
	t.Helper()
	cfg := decisionlog.Defaults()
	cfg.Sink = decisionlog.SinkStdout
	cfg.MaxQueueBytes = 1 << 40
	l, err := decisionlog.New(cfg, decisionlog.NewWriterSink(nil), decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&sidecar.Decision{ID: "d", Input: ast.NewObject(ast.Item(ast.InternedTerm("body"), ast.NewTerm(v)))})
	if l.QueueDepth() != 1 {
		t.Fatal("not queued")
	}
	return l.QueueBytes()
}

// jsonKeys are the keys random documents draw from: one-byte strings and
// strings OPA interns share their memory, which the log's sizer counts
// once when met twice in a row.
var jsonKeys = []string{"a", "b", "id", "sku", "name", "value", "GET", "true", "k1", "k10", "k2", "é", "ü", "\u212a", ""}

func randomJSON(rng *rand.Rand, depth int) string {
	switch n := rng.IntN(10); {
	case depth == 0 || n < 4:
		switch rng.IntN(5) {
		case 0:
			return fmt.Sprint(rng.IntN(2000) - 1000)
		case 1:
			return "1.5e3"
		case 2:
			return [...]string{"true", "false", "null"}[rng.IntN(3)]
		default:
			return fmt.Sprintf("%q", jsonKeys[rng.IntN(len(jsonKeys))])
		}
	case n < 7:
		elems := make([]string, rng.IntN(6))
		for i := range elems {
			elems[i] = randomJSON(rng, depth-1)
		}
		return "[" + strings.Join(elems, ",") + "]"
	default:
		seen := map[string]bool{}
		var members []string
		for range rng.IntN(8) {
			k := jsonKeys[rng.IntN(len(jsonKeys))]
			if !seen[k] {
				seen[k] = true
				members = append(members, fmt.Sprintf("%q:%s", k, randomJSON(rng, depth-1)))
			}
		}
		return "{" + strings.Join(members, ",") + "}"
	}
}

func wideJSON(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":"v%d"`, i, i%7)
	}
	b.WriteString("}")
	return b.String()
}

// BenchmarkWideJSONBody is converting a JSON body of 200,000 keys and
// walking it once, as the decision log's sizing did on the check path:
// the first walk of an ast.Object sorts its members.
func BenchmarkWideJSONBody(b *testing.B) {
	var x any
	if err := util.UnmarshalJSON([]byte(wideJSON(200000)), &x); err != nil {
		b.Fatal(err)
	}
	for name, convert := range map[string]func(any) (ast.Value, error){"jsonValue": jsonValue, "InterfaceToValue": ast.InterfaceToValue} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := convert(x)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				v.(ast.Object).Foreach(func(_, _ *ast.Term) { n++ })
			}
		})
	}
}
