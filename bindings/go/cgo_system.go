//go:build llmint8_system

package llmint8

// The installed library, through pkg-config (`make install`; its llmint8.pc
// carries the include folder, the library and an rpath to it).

/*
#cgo pkg-config: llmint8
*/
import "C"
