package authz

import (
	"net/url"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/paramkey"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// unseenParam refuses a query field that a common upstream reads as a
// parameter the policy reads (names: the parsed_query keys it needs) while
// parsed_query, built as OPA-Envoy builds it (Go's url.ParseQuery), holds
// it under another name or not at all. Upstreams read
//   - " query", "query[]", "query[x]" as query (PHP drops leading spaces,
//     reads " " and "." as "_" and a bracket as an array of query),
//   - "[query]" and "query]" as query (Rack 2 drops brackets around the
//     name; Node's qs reads "[query]" as query),
//   - "Query" as query (ASP.NET compares names ignoring case),
//   - a pair holding ";" or an invalid escape, which Go leaves out while
//     PHP, qs and Rack read it (Rack 2 also splits it on ";"),
//
// and the last of repeated names wins in PHP and Rack. The policy would
// judge one document (the exact "query") while the upstream runs
// another. Deputy cannot merge the spellings into parsed_query, which
// stays OPA-Envoy's, and a policy may read one value of it; refused, no
// reading of the request by the policy can allow what the upstream runs.
// A policy reading parsed_query whole sees every name as sent and is not
// guarded.
//
// It allocates nothing for a query whose field names hold no escape, "+"
// or non-ASCII byte: it runs on every check whose policy reads a query
// parameter.
func unseenParam(raw string, need *policy.InputNeeds) error {
	return unseenFields(raw, need, "query")
}

// unseenFields is unseenParam for the fields of raw, a query string or a
// form body (in: "query" or "body", the field an error names), against
// the fields need says the policy reads of parsed_query or parsed_body.
func unseenFields(raw string, need *policy.InputNeeds, in string) error {
	if raw == "" || need == nil || need.All || len(need.Children) == 0 {
		return nil
	}
	// The names' keys once, on the stack for the usual few names.
	var buf [4]string
	names, keys := readNames(need, buf[:0:2], buf[2:2:4])
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		semicolon := strings.IndexByte(pair, ';') >= 0
		want, exact := readAs(name, names, keys)
		if want != "" {
			switch {
			case !exact:
				return sidecar.Invalid(in, "field %q is read as %q by upstreams (PHP, Rack, qs or ASP.NET), not by the policy: refused", name, want)
			case semicolon || !escapesValid(name) || !escapesValid(value):
				return sidecar.Invalid(in, "field %q holds a \";\" or an invalid escape: the policy's parsed_%s leaves it out, upstreams read it: refused", want, in)
			}
		}
		if !semicolon {
			continue
		}
		for piece := range strings.SplitSeq(pair, ";") {
			pname, _, _ := strings.Cut(piece, "=")
			if want, _ := readAs(pname, names, keys); want != "" {
				return sidecar.Invalid(in, "field %q after a \";\" is read as %q by upstreams that split on it (Rack 2), not by the policy: refused", pname, want)
			}
		}
	}
	return nil
}

// unseenParts is unseenFields for a multipart body's parts, by the names
// Go's parser read (fields and files alike), unescaped as multipart sends
// them. unsure (unsureNames) says a part names its field in a way parsers
// read differently: Deputy cannot say which name the upstream sees, so
// a policy reading some fields cannot be shown what the upstream reads.
func unseenParts(vals url.Values, unsure bool, need *policy.InputNeeds) error {
	if need == nil || need.All || len(need.Children) == 0 {
		return nil
	}
	if unsure {
		return sidecar.Invalid("body", "a multipart part names its field in a way parsers read differently (an encoded word, name*=, or two Content-Disposition headers): the policy reads fields by name, refused")
	}
	var buf [4]string
	names, keys := readNames(need, buf[:0:2], buf[2:2:4])
	for name := range vals {
		if want, exact := readAsName(name, names, keys); want != "" && !exact {
			return sidecar.Invalid("body", "field %q is read as %q by upstreams (PHP, Rack, qs or ASP.NET), not by the policy: refused", name, want)
		}
	}
	return nil
}

// readNames appends the names need reads, and their keys (paramkey.Of).
func readNames(need *policy.InputNeeds, names, keys []string) ([]string, []string) {
	for w := range need.Children {
		names, keys = append(names, w), append(keys, paramkey.Of(w))
	}
	return names, keys
}

// readAs returns the one of names that a raw (still escaped) field name is
// read as by some upstream, and whether Go reads it as that very name.
// keys are the names' keys (paramkey.Of); a name is read as one when
// either of its keys (paramkey.Keys: PHP reads "access[token" as
// access_token) is that key. The decision log masks a query carrier under
// the same readings.
// IIS reads "%uXXXX" escapes too (paramkey.DecodeIIS), which Go leaves
// as sent: a name read so is never the name itself to Go.
func readAs(raw string, names, keys []string) (want string, exact bool) {
	if want, exact = readAsName(paramkey.Decode(raw), names, keys); want != "" {
		return want, exact
	}
	if iis, ok := paramkey.DecodeIIS(raw); ok {
		if want, _ = readAsName(iis, names, keys); want != "" {
			return want, false
		}
	}
	return "", false
}

// readAsName is readAs for a name as decoded.
func readAsName(name string, names, keys []string) (want string, exact bool) {
	key, php := paramkey.Keys(name)
	for i, k := range keys {
		if paramkey.Same(key, k) || php != "" && paramkey.Same(php, k) {
			return names[i], name == names[i]
		}
	}
	return "", false
}

// escapesValid reports whether every "%" of s starts a valid escape, as Go
// requires to keep a field.
func escapesValid(s string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0; {
		if i+2 >= len(s) || !sidecar.IsHex(s[i+1]) || !sidecar.IsHex(s[i+2]) {
			return false
		}
		j := strings.IndexByte(s[i+3:], '%')
		if j < 0 {
			break
		}
		i += 3 + j
	}
	return true
}
