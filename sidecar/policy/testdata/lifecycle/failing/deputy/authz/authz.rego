# METADATA
# description: Allows every request and names the data label, so tests see which revision decided.
package deputy.authz

# METADATA
# entrypoint: true
decision := {"allowed": _allowed, "reason": data.deputy.authz.label}

default _allowed := false

_allowed if input.attributes.request.http.method == "GET"
