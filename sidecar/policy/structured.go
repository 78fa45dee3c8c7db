package policy

import (
	"bytes"
	"encoding/json"
	"io"
	"path"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"go.yaml.in/yaml/v3"

	"github.com/deputyhq/deputy/sidecar"
)

// What parsing a bundle's structured files may build. OPA's bundle reader
// turns data.json, data.yaml and .manifest into Go values before it
// compares them with their signed digest (the digest of a JSON file is
// over its parsed value), and decodes .signatures.json before any
// signature is checked. policy.max_bundle_bytes bounds their bytes, not
// what parsing them costs: about 110 to 160 bytes allocated per JSON value
// and 60 to 220 bytes held (measured with OPA v1.22 on [0,0,...],
// {"a":0,...}, [[],...], [{},...] and [[0],...]), so 60 MiB of [0,0,...]
// compressed to 78 KB took 2.2 GB and 20 s before the refusal, unsigned
// or not. Deputy therefore reads every structured file first and counts
// its values without building them (valueBudget.check), and refuses the
// bundle before OPA's reader parses anything when the files hold more
// values than policy.max_bundle_values (DefaultMaxBundleValues), or when a
// file is larger than its bound below.
const (
	// maxMetaBytes bounds a manifest (.manifest, .manifest.pb) and a
	// signatures file (.signatures.json). A manifest holds roots, a
	// revision and a little metadata, a few hundred bytes; a signatures
	// file one JWT naming each file with its hash, about 130 bytes a file:
	// a few KiB for a policy set of tens of files, and room for thousands.
	maxMetaBytes = 1 << 20
	// maxYAMLBytes bounds a structured file parsed as YAML (a data.yaml,
	// or a .manifest, that is not JSON). go-yaml builds a node of about
	// 240 bytes for each value before anything can count them, 120 MiB
	// for 1 MiB of [0,0,...]: 256 KiB keeps that near 30 MB. Larger data
	// goes in data.json.
	maxYAMLBytes = 256 << 10
)

// parseAs is how a reader parses a structured file.
type parseAs int

const (
	parseNone   parseAs = iota // not structured: Rego, wasm, anything else
	parseJSON                  // JSON only: patch.json, a policy path's .json
	parseEither                // JSON when it is valid JSON, else YAML (OPA's util.Unmarshal)
	parseYAML                  // YAML always: a policy path's .yaml and .yml
	parseMeta                  // a signatures file or a protobuf manifest: bounded by size alone
)

// bundleParse is how OPA's bundle reader parses the file at name, a
// slash-separated path in a bundle: every file it takes for data, a
// patch, a manifest or signatures, by the names it matches, wherever they
// lie (layoutCheck refuses those out of place, but only once the reader
// has read them).
func bundleParse(name string) parseAs {
	base := path.Base(name)
	switch {
	case bundle.IsSignaturesFile(name), strings.HasSuffix(name, bundle.ManifestProtoExt):
		return parseMeta
	case strings.HasSuffix(name, bundle.ManifestExt), bundle.IsYAMLDataFile(name), base == "data.json":
		// data.json too: the reader decodes it as JSON, but checks it
		// against its signed digest with util.Unmarshal, which parses it
		// as YAML when it is not JSON.
		return parseEither
	case base == "patch.json":
		return parseJSON
	}
	return parseNone
}

// pathParse is how OPA's file loader (policy.paths) parses the file at
// name: every JSON and YAML file is data.
func pathParse(name string) parseAs {
	switch {
	case path.Ext(name) == ".json":
		return parseJSON
	case bundle.IsYAMLFile(name):
		return parseYAML
	}
	return parseNone
}

// valueBudget counts the values the structured files of one bundle or
// policy set would parse into, and refuses past max. field names the
// setting in errors.
type valueBudget struct {
	field string
	max   int64
	used  int64
}

func newValueBudget(field string, max int64) *valueBudget {
	if max <= 0 {
		max = DefaultMaxBundleValues
	}
	return &valueBudget{field: field, max: max}
}

func (b *valueBudget) add(name string, n int64) error {
	if b.used += n; b.used > b.max {
		return sidecar.Invalid(b.field, "%s: the structured files read so far hold more than %d values (policy.max_bundle_values; object keys count): refused before they are parsed, which costs 100 to 300 bytes a value", name, b.max)
	}
	return nil
}

// check reads the file at name (size bytes) from r as a reader parsing
// it as how would, counting its values, and refuses it when it is larger
// than its bound or its values overflow the budget.
//
// JSON is told from YAML as OPA's util.Unmarshal tells them, by
// json.Valid, and its values are counted byte by byte as the file
// streams in (jsonCounter): neither allocates, where decoding it token by
// token (json.Decoder.Token) allocated 115 bytes a value, about what
// parsing it costs. The file is held while it is read, for json.Valid and
// go-yaml, as the reader will hold it, but is refused as soon as its values
// overflow the budget (after about 1 MB of [0,0,...]).
// A file that does not parse is let through: its reader refuses it, and
// encoding/json refuses a syntax error before it builds a value.
func (b *valueBudget) check(name string, how parseAs, size int64, r io.Reader) error {
	if how == parseNone {
		return nil
	}
	if how == parseMeta || strings.HasSuffix(name, bundle.ManifestExt) {
		if size > maxMetaBytes {
			return b.tooLarge(name, size, maxMetaBytes, "a manifest or signatures file needs a few KiB")
		}
		if how == parseMeta {
			return nil
		}
	}
	if how == parseYAML && size > maxYAMLBytes {
		return b.tooLarge(name, size, maxYAMLBytes, "YAML costs several times what JSON does to parse: larger data goes in a .json file")
	}
	// Past the budget, a file is refused as it streams in when it can
	// only be JSON, or is too large to be anything else.
	early := how == parseJSON || how == parseEither && size > maxYAMLBytes
	var count jsonCounter
	// Allocated at once, as OPA's reader allocates it (no copies while it
	// grows), and filled 32 KiB at a time, so that a refusal midway has
	// touched no more of it than it read.
	bs := make([]byte, size)
	for n := 0; n < len(bs); {
		m, err := r.Read(bs[n:min(n+32<<10, len(bs))])
		_, _ = count.Write(bs[n : n+m])
		if n += m; early && b.used+count.n > b.max {
			return b.add(name, count.n)
		}
		if err != nil && n < len(bs) {
			return nil // cut short: its reader reports the read error, reading the file itself
		}
	}
	switch how {
	case parseJSON:
		if !json.Valid(bs) {
			return nil
		}
		return b.add(name, count.n)
	case parseEither:
		if text := bytes.TrimPrefix(bs, utf8BOM); json.Valid(text) { // util.Unmarshal drops a BOM
			return b.add(name, jsonValues(text))
		}
		if size > maxYAMLBytes {
			return b.tooLarge(name, size, maxYAMLBytes, "not JSON, so parsed as YAML, which costs several times what JSON does: larger data goes in data.json")
		}
	}
	return b.yaml(name, bs)
}

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

func (b *valueBudget) tooLarge(name string, size, max int64, why string) error {
	return sidecar.Invalid(b.field, "%s: larger than %d bytes (%d); %s", name, max, size, why)
}

// jsonValues counts the values of the valid JSON text bs (jsonCounter).
func jsonValues(bs []byte) int64 {
	var c jsonCounter
	_, _ = c.Write(bs)
	return c.n
}

// jsonCounter counts the values of the JSON text written to it, in any
// pieces, object keys included: every string, object and array, and
// every number, true, false and null, whose first byte follows [, a comma
// or a colon (or starts the text). Exact for valid JSON.
type jsonCounter struct {
	n                 int64
	inString, escaped bool
	prev              byte // the last byte outside strings and white space
}

func (c *jsonCounter) Write(p []byte) (int, error) {
	for _, ch := range p {
		if c.inString {
			switch {
			case c.escaped:
				c.escaped = false
			case ch == '\\':
				c.escaped = true
			case ch == '"':
				c.inString = false
			}
			continue
		}
		switch {
		case ch == ' ', ch == '\t', ch == '\n', ch == '\r':
			continue
		case ch == '"':
			c.inString = true
			c.n++
		case ch == '{', ch == '[':
			c.n++
		case ch == '-', '0' <= ch && ch <= '9', ch == 't', ch == 'f', ch == 'n':
			if p := c.prev; p == 0 || p == '[' || p == ',' || p == ':' {
				c.n++ // a number, true, false or null starts
			}
		}
		c.prev = ch
	}
	return len(p), nil
}

// yaml counts the values (mapping keys included) that decoding the YAML
// text bs builds, every alias counted as the values it repeats: go-yaml
// bounds aliasing only in proportion to the document, and about 6 KiB of
// it decodes to 300,000 values. Every document counts, though OPA decodes
// the first alone: it parses them all.
func (b *valueBudget) yaml(name string, bs []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(bs))
	sizes := map[*yaml.Node]int64{}
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return nil // io.EOF, or an error the reader refuses alike
		}
		if err := b.add(name, b.nodes(&doc, sizes)); err != nil {
			return err
		}
	}
}

// nodes is the number of values decoding n builds, capped just past the
// budget so that nested aliases (each level multiplying the last) cannot
// overflow. sizes remembers each node's count, so a node repeated by
// aliases is walked once; a node found again while it is walked (an alias
// to an anchor around it, which go-yaml refuses) counts for nothing.
func (b *valueBudget) nodes(n *yaml.Node, sizes map[*yaml.Node]int64) int64 {
	if n == nil {
		return 0
	}
	if c, ok := sizes[n]; ok {
		return c
	}
	sizes[n] = 0
	var c int64
	switch n.Kind {
	case yaml.AliasNode:
		c = b.nodes(n.Alias, sizes)
	case yaml.DocumentNode:
		for _, k := range n.Content {
			c += b.nodes(k, sizes)
		}
	default:
		c = 1
		for _, k := range n.Content {
			c = min(c+b.nodes(k, sizes), b.max+1)
		}
	}
	c = min(c, b.max+1)
	sizes[n] = c
	return c
}
