package delegation

import (
	"strings"

	"github.com/deputyhq/deputy/sidecar"
)

// PathTemplate is a path prefix with one {customer} segment, e.g.
// "/customers/{customer}/". Its literal segments are kept lower-cased.
type PathTemplate struct {
	segments []string
	at       int
}

func ParsePathTemplate(s string) (*PathTemplate, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, sidecar.Invalid("path_template", "must start with /")
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "..."), "*")
	s = strings.Trim(s, "/")
	t := &PathTemplate{segments: strings.Split(strings.ToLower(s), "/"), at: -1}
	for i, seg := range t.segments {
		switch {
		case seg == "{customer}" && t.at < 0:
			t.at = i
		case seg == "{customer}":
			return nil, sidecar.Invalid("path_template", "names {customer} twice")
		case seg == "" || strings.ContainsAny(seg, "{}"):
			return nil, sidecar.Invalid("path_template", "segment %q is neither a literal nor {customer}", seg)
		}
	}
	if t.at < 0 {
		return nil, sidecar.Invalid("path_template", "must contain a {customer} segment")
	}
	return t, nil
}

// Match returns the customer segment of path. path is the canonical path
// the check decides on (decoded once, slashes merged, ";params" dropped):
// read as the policies read it, literal segments case-insensitively (as
// input.deputy.request.lower_segments) and the customer as sent (as
// input.deputy.request.segments), it is never decoded again, so the
// customer resolved is the one the policies compare.
func (t *PathTemplate) Match(path string) (string, bool) {
	var customer string
	for i, seg := range t.segments {
		var cur string
		for cur == "" && path != "" {
			cur, path, _ = strings.Cut(strings.TrimPrefix(path, "/"), "/")
		}
		switch {
		case cur == "":
			return "", false
		case i == t.at:
			customer = cur
		case strings.ToLower(cur) != seg:
			return "", false
		}
	}
	return customer, true
}
