//go:build race

package policy_test

// raceEnabled: the race detector is on, and allocates besides the code
// under test (its shadow of each allocation).
const raceEnabled = true
