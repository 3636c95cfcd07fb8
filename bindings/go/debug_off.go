//go:build !llmint8debug

package llmint8

func debugGC() {}
