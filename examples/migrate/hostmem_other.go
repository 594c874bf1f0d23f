//go:build !linux

package main

// hostRAM is this host's physical memory in bytes, 0 if unknown.
func hostRAM() int64 { return 0 }
