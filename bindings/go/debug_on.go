//go:build llmint8debug

package llmint8

import "runtime"

// debugGC forces a collection before every C call under `-tags llmint8debug`,
// so that a missing runtime.KeepAlive shows up as a use-after-free.
func debugGC() { runtime.GC() }
