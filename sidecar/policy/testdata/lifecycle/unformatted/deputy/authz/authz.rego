package deputy.authz

decision := {"allowed": true,   "reason": data.deputy.authz.label}
