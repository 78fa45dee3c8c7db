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
