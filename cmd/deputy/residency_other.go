//go:build !linux

package main

// releaseStartupPages is Linux-only; elsewhere the kernel keeps what
// start-up touched until it needs the memory.
func releaseStartupPages() error { return nil }
