package identity

// ReadDevKey lets tests read a key file as another user would.
var ReadDevKey = readDevKey

// MissRetry is how soon an unknown kid may fetch again after a failed fetch.
const MissRetry = missRetry

// ContainsFold is containsFold, for its fuzz test.
var ContainsFold = containsFold

// SignatureChecks is how many signature verifications v has made.
func (v *Verifier) SignatureChecks() int64 { return v.sigChecks.Load() }
