package deputy.authz

decision := {"allowed": true} if {
	_public(input.deputy.request.path)
}

# METADATA
# custom:
#   deputy_memo: true
_public(path) if {
	startswith(path, "/catalog/")
	not input.identity
}
