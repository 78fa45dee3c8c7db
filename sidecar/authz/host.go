package authz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/deputyhq/deputy/sidecar"
)

// decidedHost derives the host the request is decided on, once, strictly
// (sidecar.ParseHost): the check's host, which is Envoy's :authority (or
// Host), and the forwarding proxy's X-Forwarded-Host on the HTTP check.
// Every :authority or host header the check carries must name the same
// host, as Envoy's do: a policy may read either. A form no client sends is
// refused (EINVALID, 400 malformed_request) before anything decides on it,
// never read leniently: Caddy passes "shop.example:1,admin.example" on,
// and Rails reads it as admin.example where a lenient reader finds
// shop.example. A check naming no host has none: no session is honoured
// on it.
func decidedHost(http *authv3.AttributeContext_HttpRequest, view *sidecar.Request) (sidecar.Host, error) {
	var h sidecar.Host
	named := false
	name := func(field, v string) error {
		if v == "" {
			return nil
		}
		p, err := sidecar.ParseHost(v)
		if err != nil {
			return sidecar.RefuseHost(field, err)
		}
		if named && p != h {
			return sidecar.Invalid(field, "names another host than the check's host: refused, as policy and upstream may read either")
		}
		h, named = p, true
		return nil
	}
	if err := name("host", http.GetHost()); err != nil {
		return sidecar.Host{}, err
	}
	var buf [2]string
	for _, field := range [...]string{":authority", "host"} {
		for _, v := range view.AppendHeaderValues(buf[:0], field) {
			if err := name(field, v); err != nil {
				return sidecar.Host{}, err
			}
		}
	}
	return h, nil
}

// copiesAgree refuses a check whose fields and their copies disagree: a
// :path header other than the path field, a :method header other than
// the method field, or a body and a raw_body that differ. Envoy fills
// each pair from one source, so only a caller other than Envoy sends a
// disagreeing pair; Deputy decides on the field, and a policy (or what
// the caller forwards) may read the copy, so the two would be deciding
// on different requests. The query and fragment fields, which Envoy
// always leaves empty (the query is in path, a fragment is never sent),
// are refused when filled, for the same reason. Refused (EINVALID, 400
// malformed_request) as a disagreeing host is (decidedHost).
func copiesAgree(http *authv3.AttributeContext_HttpRequest, view *sidecar.Request) error {
	if http.GetQuery() != "" || http.GetFragment() != "" {
		return sidecar.Invalid("query", "the check's query and fragment fields are always empty in Envoy's checks, the query being in path: refused when filled, as policy may read them")
	}
	var buf [2]string
	for _, v := range view.AppendHeaderValues(buf[:0], ":path") {
		if v != http.GetPath() {
			return sidecar.Invalid(":path", "names another path than the check's path: refused, as policy and upstream may read either")
		}
	}
	for _, v := range view.AppendHeaderValues(buf[:0], ":method") {
		if v != http.GetMethod() {
			return sidecar.Invalid(":method", "names another method than the check's method: refused, as policy and upstream may read either")
		}
	}
	if body, raw := http.GetBody(), http.GetRawBody(); body != "" && len(raw) > 0 && body != string(raw) {
		return sidecar.Invalid("raw_body", "differs from the check's body: refused, as policy may read either")
	}
	return nil
}
