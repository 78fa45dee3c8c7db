package acme

decision := {"allowed": true}
