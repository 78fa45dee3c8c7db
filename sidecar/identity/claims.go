package identity

import (
	"strconv"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
)

// claimPath is a claim name, split once at configuration time so the hot
// path does no string work to follow realm_access.roles.
type claimPath struct {
	full  string
	parts []string
}

type claimPaths struct {
	sub, name, email, roles, privileges, org, domain claimPath
}

func compileClaims(c ClaimsConfig) claimPaths {
	p := func(s string) claimPath { return claimPath{full: s, parts: strings.Split(s, ".")} }
	return claimPaths{sub: p(c.Sub), name: p(c.Name), email: p(c.Email), roles: p(c.Roles),
		privileges: p(c.Privileges), org: p(c.Org), domain: p(c.Domain)}
}

func (cp claimPaths) identity(claims map[string]any) *sidecar.Identity {
	return &sidecar.Identity{
		Subject:    cp.sub.str(claims),
		Name:       cp.name.str(claims),
		Email:      cp.email.str(claims),
		Roles:      cp.roles.list(claims),
		Privileges: cp.privileges.list(claims),
		Org:        cp.org.str(claims),
		Domain:     cp.domain.str(claims),
	}
}

// lookup prefers a claim literally named with dots (some providers use
// URLs as claim names) over walking nested objects.
func (p claimPath) lookup(claims map[string]any) any {
	if v, ok := claims[p.full]; ok || len(p.parts) == 1 {
		return v
	}
	var cur any = claims
	for _, part := range p.parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

func (p claimPath) str(claims map[string]any) string {
	switch v := p.lookup(claims).(type) {
	case string:
		return v
	case float64: // numeric subject ids
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

// list accepts an array of strings or a space-separated string (the OAuth
// "scope" convention); anything else yields nothing.
func (p claimPath) list(claims map[string]any) []string {
	switch v := p.lookup(claims).(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
