package deputy.authz

default decision := false

decision if input.identity.sub
