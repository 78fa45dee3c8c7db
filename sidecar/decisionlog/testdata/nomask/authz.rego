package deputy.authz

default decision := false
