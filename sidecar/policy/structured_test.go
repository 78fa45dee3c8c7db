package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// tokens counts the values of the JSON text s as encoding/json reads
// them: every token but a closing delimiter.
func tokens(t *testing.T, s string) int64 {
	dec := json.NewDecoder(strings.NewReader(s))
	var n int64
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if tok != json.Delim('}') && tok != json.Delim(']') {
			n++
		}
	}
}

// jsonValues counts what a JSON decoder reads, byte by byte.
func TestJSONValuesCountsTokens(t *testing.T) {
	for _, s := range []string{
		`0`, `-1.5e-3`, `"a"`, `true`, `null`, `[]`, `{}`,
		`[0,0,0]`, ` [ 0 , -1 , 2e5 , true , false , null ] `,
		`{"a":0,"b":[1,{"c":"d"}],"e":{}}`,
		`{"k\"ey":"v\\","n":"[1,2,{\"x\":3}]","t":"true, false, null"}`,
		`[[],[{}],[[0]],{"a":[]}]`,
		"{\n\t\"a\": [\n\t\t1,\n\t\t2\n\t]\n}",
	} {
		if got, want := jsonValues([]byte(s)), tokens(t, s); got != want {
			t.Errorf("jsonValues(%s) = %d, want %d", s, got, want)
		}
	}
}

// A YAML alias counts as the values it repeats, however deep: a few
// lines of anchors, each repeating the last ten times, would decode to a
// billion values.
func TestYAMLValuesCountAliases(t *testing.T) {
	cases := []struct {
		name, doc string
		want      int64
	}{
		{"flow", "[0, 0, 0]", 4},
		{"mapping", "a: 1\nb: [x, y]\n", 7},
		{"alias", "a: &a [0, 0, 0]\nb: [*a, *a]\n", 1 + 1 + 4 + 1 + 1 + 4 + 4},
		{"two documents", "a: 1\n---\nb: 2\n", 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newValueBudget("bundle", 1000)
			if err := b.yaml("data.yaml", []byte(c.doc)); err != nil {
				t.Fatal(err)
			}
			if b.used != c.want {
				t.Errorf("counted %d values, want %d", b.used, c.want)
			}
		})
	}
	var laughs bytes.Buffer
	laughs.WriteString("a: &a [0,0,0,0,0,0,0,0,0,0]\n")
	for i := 'b'; i <= 'j'; i++ {
		laughs.WriteString(string(i) + ": &" + string(i) + " [" + strings.TrimSuffix(strings.Repeat("*"+string(i-1)+",", 10), ",") + "]\n")
	}
	b := newValueBudget("bundle", DefaultMaxBundleValues)
	if err := b.yaml("data.yaml", laughs.Bytes()); err == nil || !strings.Contains(err.Error(), "max_bundle_values") {
		t.Errorf("err = %v, want a billion values refused", err)
	}
}
