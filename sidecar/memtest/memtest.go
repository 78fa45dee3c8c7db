// Package memtest measures, for tests, what a program keeps on the heap.
package memtest

import "runtime"

// Live is the heap in use once two collections have run: what the
// program still references (a cache's entries and what they hold), not
// what it allocated and dropped.
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
