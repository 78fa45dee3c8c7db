package identity

// ReadDevKey lets tests read a key file as another user would.
var ReadDevKey = readDevKey

// MissRetry is how soon an unknown kid may fetch again after a failed fetch.
const MissRetry = missRetry

// ContainsFold is containsFold, for its fuzz test.
var ContainsFold = containsFold
