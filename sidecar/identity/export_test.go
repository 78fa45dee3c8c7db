package identity

// ReadDevKey lets tests read a key file as another user would.
var ReadDevKey = readDevKey
