// Package resolve owns the check path's view of delegation state: the
// resolvers that turn a session cookie or an on-behalf-of customer into a
// sidecar.Delegation, the local caches in front of their store lookups and
// the guard that bounds how long a check waits for the store. It changes
// for speed; the lifecycle rules that write this state are package
// delegation.
package resolve
