package decisionlog

import (
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
)

// decoderRead reads the JSON value s starts with by encoding/json.
func decoderRead(s string) (int, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return 0, false
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return int(dec.InputOffset()), true
		}
	}
}

// readJSON reads a value as encoding/json reads it: the same texts are
// JSON, and a value ends at the same byte.
func TestReadJSONReadsAsEncodingJSON(t *testing.T) {
	m := newMasker(Defaults())
	alpha := []string{"{", "}", "[", "]", ",", ":", " ", `"a"`, `"b"`, "1", "-", "0", ".", "e", "+", "true", "nul", "null", `"\u00e9"`, `"\x"`, `"\ud800"`, "\t", "x", `"`, `\`, "01", "1.5e3", "\x01"}
	r := rand.New(rand.NewSource(1))
	bad, valid := 0, 0
	for range 50000 {
		var b strings.Builder
		b.WriteString([]string{"{", "["}[r.Intn(2)])
		for range r.Intn(12) {
			b.WriteString(alpha[r.Intn(len(alpha))])
		}
		s := b.String()
		n1, ok1 := decoderRead(s)
		n2, found, ok2 := m.readJSON(newMaskWork(), s, 1)
		if found {
			continue
		}
		if ok1 {
			valid++
		}
		if ok1 != ok2 || (ok1 && n1 != n2) {
			bad++
			if bad < 30 {
				t.Errorf("%q: json %d %v, scanner %d %v", s, n1, ok1, n2, ok2)
			}
		}
	}
	if valid < 1000 {
		t.Errorf("only %d of the texts tried are JSON", valid)
	}
}
