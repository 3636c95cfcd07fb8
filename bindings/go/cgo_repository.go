//go:build !llmint8_system

package llmint8

// The header and library of the repository this package sits in (include/,
// target/release/ after `cargo build --release`), with an rpath to the latter.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -Wl,-rpath,${SRCDIR}/../../target/release -lllmint8
*/
import "C"
