package identity

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
)

// claimPath is a claim name, split once at configuration time so the hot
// path does no string work to follow realm_access.roles.
type claimPath struct {
	full  string
	parts []string
	// spaced: the claim is named scope or scp, whose string holds
	// several values (see list).
	spaced bool
}

type claimPaths struct {
	sub, name, email, roles, privileges, org, domain claimPath
}

func compileClaims(c ClaimsConfig) claimPaths {
	p := func(s string) claimPath {
		parts := strings.Split(s, ".")
		last := parts[len(parts)-1]
		return claimPath{full: s, parts: parts, spaced: last == "scope" || last == "scp"}
	}
	return claimPaths{sub: p(c.Sub), name: p(c.Name), email: p(c.Email), roles: p(c.Roles),
		privileges: p(c.Privileges), org: p(c.Org), domain: p(c.Domain)}
}

// identity maps the claims. A claim that names someone (sub, org, domain,
// ...) may be a JSON number, but only an integer a float64 holds exactly:
// 2^53+1 read as a float is 2^53, another user's id.
func (cp claimPaths) identity(claims map[string]any) (*sidecar.Identity, error) {
	id := &sidecar.Identity{
		Roles:      cp.roles.list(claims),
		Privileges: cp.privileges.list(claims),
	}
	for _, f := range [...]struct {
		p   claimPath
		dst *string
	}{{cp.sub, &id.Subject}, {cp.name, &id.Name}, {cp.email, &id.Email}, {cp.org, &id.Org}, {cp.domain, &id.Domain}} {
		v, err := f.p.str(claims)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	// The name is display text that goes into session events (the mail
	// telling a customer who acts as them), the session log and upstream
	// headers. Deputy cannot refuse a signed token over it, so control
	// characters, which would forge mail header lines, drive a terminal
	// or reorder what a reader sees (bidi overrides), are dropped here, before any of those read it.
	id.Name = sidecar.StripControl(id.Name)
	return id, nil
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

// maxExactInt is the largest integer above which float64 skips integers.
const maxExactInt = 1<<53 - 1

// str reads a string claim, or an integer claim (numeric ids) written as a
// plain integer within ±(2^53-1); other numbers are refused, not rounded.
func (p claimPath) str(claims map[string]any) (string, error) {
	switch v := p.lookup(claims).(type) {
	case string:
		return v, nil
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n > maxExactInt || n < -maxExactInt {
			return "", fmt.Errorf("claim %s: the number %s is not an integer within ±(2^53-1); send the id as a string", p.full, v)
		}
		return strconv.FormatInt(n, 10), nil
	}
	return "", nil
}

// list accepts an array of strings, or a string: one value, except in a
// claim named scope or scp, which holds values separated by white space
// (the OAuth convention: RFC 8693 4.2, Entra ID's scp). Providers send a
// one-valued roles or groups claim as a string (Keycloak mappers with
// multivalued off, SAML bridges, Auth0 actions) and as an array once it
// holds two: split, a role named "Regional admin" would grant admin when
// sent alone. Anything else yields nothing.
func (p claimPath) list(claims map[string]any) []string {
	switch v := p.lookup(claims).(type) {
	case string:
		if p.spaced {
			return strings.Fields(v)
		}
		if v == "" {
			return nil
		}
		return []string{v}
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
