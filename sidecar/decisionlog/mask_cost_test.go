package decisionlog

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"testing"
)

// costInput is the input of a check of path as OPA-Envoy's policies see
// it: the query in the path, the URI headers, Envoy's query field and
// parsed_query.
func costInput(path string) map[string]any {
	_, query, _ := strings.Cut(path, "?")
	parsed := map[string]any{}
	if q, err := url.ParseQuery(query); err == nil {
		for k, vs := range q {
			list := make([]any, len(vs))
			for i, v := range vs {
				list[i] = v
			}
			parsed[k] = list
		}
	}
	return map[string]any{
		"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": path, "query": query,
			"headers": map[string]any{
				":path": path, "referer": "https://shop.example" + path,
				"x-envoy-original-url": "https://shop.example" + path, "user-agent": "Mozilla/5.0",
			},
		}}},
		"parsed_query": parsed,
	}
}

// maskCost returns the allocations and bytes allocated masking the
// input of a check of path, on average over runs.
func maskCost(path string) (allocs, bytes float64) {
	m := newMasker(Defaults())
	const runs = 5
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		m.mask(context.Background(), &Record{}, costInput(path), nil)
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / runs, float64(after.TotalAlloc-before.TotalAlloc) / runs
}

// hostileQueryValue is a 16 KB query value that is thousands of JSON
// values, with a tail that changes at each decoding.
var hostileQueryValue = strings.Repeat("[]", 7990) + "%2525252525"

// hostilePath is a 48 KB request whose three query values are
// hostileQueryValue.
var hostilePath = "/?a=" + hostileQueryValue + "&b=" + hostileQueryValue + "&c=" + hostileQueryValue

// Masking a request whose query values are thousands of JSON values costs
// no more than a small multiple of masking an ordinary request of the
// same size: each value is read once, in one pass, and the work per
// record is bounded. Past the bound, what is left is masked whole.
func TestMaskingCostIsBoundedByRequestSize(t *testing.T) {
	plain := strings.Repeat("x", 15980) + "%2525252525"
	ordinary := "/?a=" + plain + "&b=" + plain + "&c=" + plain
	if len(ordinary) != len(hostilePath) {
		t.Fatalf("sizes differ: %d and %d", len(ordinary), len(hostilePath))
	}
	baseAllocs, baseBytes := maskCost(ordinary)
	for name, path := range map[string]string{
		"empty arrays, decoded four times": hostilePath,
		"empty objects":                    "/?a=" + strings.Repeat("{}", 8000),
		"numbers":                          "/?a=[" + strings.Repeat("0,", 7999) + "0]",
		"empty strings":                    "/?a=[" + strings.Repeat(`"",`, 5000) + `""]`,
		"encoded strings":                  "/?a=[" + strings.Repeat(`"%2525",`, 2000) + `""]`,
		"JSON and text":                    "/?a=" + strings.Repeat("[]x", 5300),
	} {
		allocs, bytes := maskCost(path)
		t.Logf("%s: %.0f allocs, %.0f bytes; an ordinary request: %.0f allocs, %.0f bytes", name, allocs, bytes, baseAllocs, baseBytes)
		// Many short values cost an allocation or two each to decode,
		// up to the values the work bound lets a record read.
		maxAllocs := 4*baseAllocs + 2*maxMaskWork/readCost
		if path == hostilePath {
			maxAllocs = 4 * baseAllocs
		}
		if allocs > maxAllocs || bytes > 4*baseBytes {
			t.Errorf("%s: masking took %.0f allocations and %.0f bytes, an ordinary request of the same size %.0f and %.0f",
				name, allocs, bytes, baseAllocs, baseBytes)
		}
	}
}

// BenchmarkMaskHostileJSONQuery masks the input of a 48 KB check whose
// three query values are thousands of empty JSON arrays each.
func BenchmarkMaskHostileJSONQuery(b *testing.B) {
	m := newMasker(Defaults())
	b.ReportAllocs()
	b.SetBytes(int64(len(hostilePath)))
	for range b.N {
		m.mask(context.Background(), &Record{}, costInput(hostilePath), nil)
	}
}

// Past the work a record may take, the query values not yet read are
// masked whole, never logged unread; those read before are kept.
func TestMaskingPastTheWorkBoundMasksWhole(t *testing.T) {
	// Distinct values, so each is read.
	value := func(i int) string {
		return fmt.Sprintf(`[{"n":%d},`, i) + strings.Repeat(`{"a":1},`, 1900) + `{"a":1}]`
	}
	var pairs []string
	for i := range 2 * maxMaskWork / len(value(0)) {
		pairs = append(pairs, fmt.Sprintf("v%03d=%s", i, value(i)))
	}
	path := "/?" + strings.Join(pairs, "&")
	for form, got := range maskForms(t, httpInput(map[string]any{"path": path})) {
		logged, _ := lookup(got.rec.Input, "attributes", "request", "http", "path").(string)
		_, query, _ := strings.Cut(logged, "?")
		kept, masked := 0, 0
		for i, pair := range strings.Split(query, "&") {
			switch pair {
			case fmt.Sprintf("v%03d=%s", i, value(i)):
				if masked > 0 {
					t.Fatalf("%s: v%03d kept after a value was masked", form, i)
				}
				kept++
			case fmt.Sprintf("v%03d=%s", i, MaskedValue):
				masked++
			default:
				t.Fatalf("%s: pair %d logged as %.100s", form, i, pair)
			}
		}
		if kept == 0 || masked == 0 || kept+masked != len(pairs) {
			t.Errorf("%s: %d values kept, %d masked, of %d", form, kept, masked, len(pairs))
		}
		if !got.rec.unread {
			t.Errorf("%s: values masked unread, and the record does not say so", form)
		}
	}
	for form, got := range maskForms(t, httpInput(map[string]any{"path": "/?" + strings.Join(pairs[:3], "&")})) {
		if got.rec.unread {
			t.Errorf("%s: a query within the bound read as past it", form)
		}
	}
}
