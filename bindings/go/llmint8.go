// Package llmint8 is the Go binding of libllmint8: LLM.int8() (Dettmers et al.,
// 2022) matrix multiplication with an int8 weight and the mixed-precision
// decomposition of outlier features.
//
// Build: by default cgo finds the header and library in the repository this
// package sits in (include/ and target/release/, after `cargo build --release`;
// cgo_repository.go). With the build tag llmint8_system it takes them from an
// install tree through pkg-config instead (`make install`, then
// PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig if the prefix is not a system one;
// cgo_system.go), and nothing points into the repository.
//
// Matrices are row-major slices. A Context and a Weight may be used by many
// goroutines at once; Close must not race with other calls on the same handle.
// Every handle has an idempotent Close and a finalizer; using a closed handle
// returns an error, never crashes.
package llmint8

/*
#include <stdint.h>
#include <stdlib.h>
#include "llmint8.h"

// A device address (never Go memory) as the pointer the C ABI takes.
static inline void *llmint8_go_device(uintptr_t address) { return (void *)address; }
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Status is a status code of the C ABI.
type Status int32

const (
	StatusOK              Status = C.LLMINT8_OK
	StatusInvalidArgument Status = C.LLMINT8_ERR_INVALID_ARGUMENT
	StatusShape           Status = C.LLMINT8_ERR_SHAPE
	StatusUnsupported     Status = C.LLMINT8_ERR_UNSUPPORTED
	StatusNoDevice        Status = C.LLMINT8_ERR_NO_DEVICE
	StatusDevice          Status = C.LLMINT8_ERR_DEVICE
	StatusOutOfMemory     Status = C.LLMINT8_ERR_OUT_OF_MEMORY
	StatusIO              Status = C.LLMINT8_ERR_IO
	StatusFormat          Status = C.LLMINT8_ERR_FORMAT
	StatusNotFound        Status = C.LLMINT8_ERR_NOT_FOUND
	StatusInternal        Status = C.LLMINT8_ERR_INTERNAL
)

func (s Status) String() string { return C.GoString(C.llmint8_status_name(C.int32_t(s))) }

// Error is a failed call: its status and the library's message.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("llmint8: %v: %s", e.Status, e.Message) }

// Is makes errors.Is(err, llmint8.ErrShape) (and the other Err values) match
// any error of that status.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Message == "" && t.Status == e.Status
}

// Sentinels for errors.Is.
var (
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
	ErrShape           = &Error{Status: StatusShape}
	ErrUnsupported     = &Error{Status: StatusUnsupported}
	ErrNoDevice        = &Error{Status: StatusNoDevice}
	ErrOutOfMemory     = &Error{Status: StatusOutOfMemory}
)

// Backend selects where the work runs.
type Backend int32

const (
	BackendAuto Backend = C.LLMINT8_BACKEND_AUTO
	BackendCPU  Backend = C.LLMINT8_BACKEND_CPU
	BackendCUDA Backend = C.LLMINT8_BACKEND_CUDA
)

// DefaultThreshold is the outlier threshold of the paper; 0 turns the decomposition off.
const DefaultThreshold float32 = 6.0

type dtype C.int32_t

const (
	f32  dtype = C.LLMINT8_F32
	f16  dtype = C.LLMINT8_F16
	bf16 dtype = C.LLMINT8_BF16
)

// DType is the element type of a device buffer (slices carry their own).
type DType int32

const (
	DTypeF32  DType = C.LLMINT8_F32
	DTypeF16  DType = C.LLMINT8_F16
	DTypeBF16 DType = C.LLMINT8_BF16
)

// call runs one C call and, on failure, reads the message on the same OS
// thread (the library keeps it per thread).
func call(f func() C.int32_t) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	debugGC()
	if s := f(); s != C.LLMINT8_OK {
		status := Status(s)
		// The library's message starts with the status name; Error() says it once.
		message := strings.TrimPrefix(C.GoString(C.llmint8_last_error()), status.String()+": ")
		return &Error{Status: status, Message: message}
	}
	return nil
}

func shapeError(format string, args ...interface{}) error {
	return &Error{Status: StatusShape, Message: fmt.Sprintf(format, args...)}
}

// ptr is the address of a slice's first element, nil for an empty slice.
func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

// Version is the library version.
func Version() string { return C.GoString(C.llmint8_version()) }

// Context is a backend instance.
type Context struct{ p *C.llmint8_context }

// NewContext creates a context on backend and device (0 for the CPU).
func NewContext(backend Backend, device int) (*Context, error) {
	var p *C.llmint8_context
	if err := call(func() C.int32_t { return C.llmint8_context_create(C.int32_t(backend), C.int32_t(device), &p) }); err != nil {
		return nil, err
	}
	c := &Context{p: p}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close frees the context; calling it again does nothing. Weights stay valid.
func (c *Context) Close() error {
	if c.p != nil {
		C.llmint8_context_destroy(c.p)
		c.p = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// SetNumThreads sets the CPU threads later calls may use (0: the default).
func (c *Context) SetNumThreads(n int) error {
	err := call(func() C.int32_t { return C.llmint8_context_set_num_threads(c.p, C.size_t(n)) })
	runtime.KeepAlive(c)
	return err
}

// NumThreads is the number of CPU threads calls may use.
func (c *Context) NumThreads() (int, error) {
	var n C.size_t
	err := call(func() C.int32_t { return C.llmint8_context_num_threads(c.p, &n) })
	runtime.KeepAlive(c)
	return int(n), err
}

// SetStream sends a CUDA context's later device work to stream (a CUstream /
// cudaStream_t of its device, e.g. from a CUDA library; nil: the default
// stream). Asynchronous. ErrUnsupported on a CPU context.
func (c *Context) SetStream(stream unsafe.Pointer) error {
	err := call(func() C.int32_t { return C.llmint8_context_set_stream(c.p, stream) })
	runtime.KeepAlive(c)
	return err
}

// Reserve reserves a CUDA context's scratch for every matmul of up to rows
// rows, in_features up to in and out_features up to out, so that such calls
// on device memory can be captured in a CUDA graph (nothing to do on the CPU).
func (c *Context) Reserve(rows, in, out int) error {
	if rows < 0 || in < 0 || out < 0 {
		return shapeError("reserve %d rows, in %d, out %d: negative", rows, in, out)
	}
	err := call(func() C.int32_t { return C.llmint8_context_reserve(c.p, C.size_t(rows), C.size_t(in), C.size_t(out)) })
	runtime.KeepAlive(c)
	return err
}

// Synchronize waits for the work the context queued (nothing to wait for on
// the CPU, where calls return finished).
func (c *Context) Synchronize() error {
	err := call(func() C.int32_t { return C.llmint8_context_synchronize(c.p) })
	runtime.KeepAlive(c)
	return err
}

// SetRoundInputsToF16 makes later calls round inputs to float16 before
// quantizing them, as bitsandbytes' Linear8bitLt does.
func (c *Context) SetRoundInputsToF16(on bool) error {
	mode := C.int32_t(C.LLMINT8_INPUT_EXACT)
	if on {
		mode = C.LLMINT8_INPUT_ROUND_F16
	}
	err := call(func() C.int32_t { return C.llmint8_context_set_input_rounding(c.p, mode) })
	runtime.KeepAlive(c)
	return err
}

// RowScale says which values set an activation row's scale when outliers
// are decomposed (see llmint8_context_set_row_scale).
type RowScale int32

const (
	// RowScaleBitsAndBytes is bitsandbytes' rule: the absmax over the row's
	// values below the threshold.
	RowScaleBitsAndBytes RowScale = C.LLMINT8_ROW_SCALE_BITSANDBYTES
	// RowScaleInt8Part is the absmax over the columns the int8 product uses
	// (every outlier column of the call left out). The default.
	RowScaleInt8Part RowScale = C.LLMINT8_ROW_SCALE_INT8_PART
)

// SetRowScale sets the row scale rule of later calls.
func (c *Context) SetRowScale(rule RowScale) error {
	err := call(func() C.int32_t { return C.llmint8_context_set_row_scale(c.p, C.int32_t(rule)) })
	runtime.KeepAlive(c)
	return err
}

// RowScale returns the context's row scale rule.
func (c *Context) RowScale() (RowScale, error) {
	var r C.int32_t
	err := call(func() C.int32_t { return C.llmint8_context_row_scale(c.p, &r) })
	runtime.KeepAlive(c)
	return RowScale(r), err
}

// MatchBitsAndBytes makes later calls compute what bitsandbytes'
// Linear8bitLt computes: inputs rounded to float16 and its row scale.
func (c *Context) MatchBitsAndBytes() error {
	err := call(func() C.int32_t { return C.llmint8_context_match_bitsandbytes(c.p) })
	runtime.KeepAlive(c)
	return err
}

// Weight is a quantized weight [out, in]: int8 values, one scale per row, an optional bias.
type Weight struct {
	p       *C.llmint8_weight
	out, in int
}

func newWeight(p *C.llmint8_weight, out, in int) *Weight {
	w := &Weight{p: p, out: out, in: in}
	runtime.SetFinalizer(w, (*Weight).Close)
	return w
}

// Close frees the weight; calling it again does nothing.
func (w *Weight) Close() error {
	if w.p != nil {
		C.llmint8_weight_destroy(w.p)
		w.p = nil
		runtime.SetFinalizer(w, nil)
	}
	return nil
}

// usable refuses a weight that is nil or closed, naming it as the caller knows
// it (the C library would only see a NULL handle).
func (w *Weight) usable() error {
	if w == nil || w.p == nil {
		return &Error{Status: StatusInvalidArgument, Message: "the llmint8.Weight is nil or closed"}
	}
	return nil
}

// Shape is [out_features, in_features].
func (w *Weight) Shape() (out, in int) { return w.out, w.in }

func (c *Context) quantize(w unsafe.Pointer, wlen int, dt dtype, out, in int, bias unsafe.Pointer, blen int) (*Weight, error) {
	return c.quantizeKeep(w, wlen, dt, out, in, bias, blen, nil)
}

func (c *Context) quantizeKeep(w unsafe.Pointer, wlen int, dt dtype, out, in int, bias unsafe.Pointer, blen int, keep []uint32) (*Weight, error) {
	if out <= 0 || in <= 0 || wlen != out*in {
		return nil, shapeError("weight has %d elements, expected %d × %d", wlen, out, in)
	}
	if bias != nil && blen != out {
		return nil, shapeError("bias has %d elements, expected %d", blen, out)
	}
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		if len(keep) == 0 {
			return C.llmint8_weight_quantize(c.p, w, C.int32_t(dt), C.size_t(out), C.size_t(in), bias, C.int32_t(dt), &p)
		}
		return C.llmint8_weight_quantize_keep(c.p, w, C.int32_t(dt), C.size_t(out), C.size_t(in), bias, C.int32_t(dt),
			(*C.uint32_t)(ptr(keep)), C.size_t(len(keep)), &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(keep)
	if err != nil {
		return nil, err
	}
	return newWeight(p, out, in), nil
}

// QuantizeF32 quantizes a row-major [out, in] float32 weight; bias is nil or [out].
func (c *Context) QuantizeF32(w []float32, out, in int, bias []float32) (*Weight, error) {
	r, err := c.quantize(ptr(w), len(w), f32, out, in, ptr(bias), len(bias))
	runtime.KeepAlive(w)
	runtime.KeepAlive(bias)
	return r, err
}

// QuantizeKeepF32 is QuantizeF32, the weight also keeping the columns keep of w
// in float32 for the outlier product (the paper's 16-bit outlier weights; CPU
// contexts only).
func (c *Context) QuantizeKeepF32(w []float32, out, in int, bias []float32, keep []uint32) (*Weight, error) {
	r, err := c.quantizeKeep(ptr(w), len(w), f32, out, in, ptr(bias), len(bias), keep)
	runtime.KeepAlive(w)
	runtime.KeepAlive(bias)
	return r, err
}

// QuantizeKeepF16 is QuantizeF16 keeping the columns keep of w in float16.
func (c *Context) QuantizeKeepF16(w []uint16, out, in int, bias []uint16, keep []uint32) (*Weight, error) {
	r, err := c.quantizeKeep(ptr(w), len(w), f16, out, in, ptr(bias), len(bias), keep)
	runtime.KeepAlive(w)
	runtime.KeepAlive(bias)
	return r, err
}

// QuantizeF16 quantizes a weight given as raw IEEE float16 bits.
func (c *Context) QuantizeF16(w []uint16, out, in int, bias []uint16) (*Weight, error) {
	r, err := c.quantize(ptr(w), len(w), f16, out, in, ptr(bias), len(bias))
	runtime.KeepAlive(w)
	runtime.KeepAlive(bias)
	return r, err
}

// QuantizeBF16 quantizes a weight given as raw bfloat16 bits.
func (c *Context) QuantizeBF16(w []uint16, out, in int, bias []uint16) (*Weight, error) {
	r, err := c.quantize(ptr(w), len(w), bf16, out, in, ptr(bias), len(bias))
	runtime.KeepAlive(w)
	runtime.KeepAlive(bias)
	return r, err
}

// QuantizeSmoothedF32 quantizes a row-major [out, in] float32 weight smoothed
// by s (SmoothQuant's vector, in factors, each finite and > 0): the int8
// values of W·diag(s), every matmul on it dividing the activations by s before
// quantizing them. Weights sharing an input (MatmulSharedInput) must share one
// vector. keep (may be nil) lists columns kept as float32 of W·diag(s).
func (c *Context) QuantizeSmoothedF32(w []float32, out, in int, s []float32, bias []float32, keep []uint32) (*Weight, error) {
	if out <= 0 || in <= 0 || len(w) != out*in {
		return nil, shapeError("weight has %d elements, expected %d × %d", len(w), out, in)
	}
	if len(s) != in {
		return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("the smoothing vector has %d values, expected in = %d", len(s), in)}
	}
	if bias != nil && len(bias) != out {
		return nil, shapeError("bias has %d elements, expected %d", len(bias), out)
	}
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		return C.llmint8_weight_quantize_smoothed(c.p, ptr(w), C.LLMINT8_F32, C.size_t(out), C.size_t(in),
			(*C.float)(ptr(s)), 0, C.size_t(in), ptr(bias), C.LLMINT8_F32, (*C.uint32_t)(ptr(keep)), C.size_t(len(keep)), &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(w)
	runtime.KeepAlive(s)
	runtime.KeepAlive(bias)
	runtime.KeepAlive(keep)
	if err != nil {
		return nil, err
	}
	return newWeight(p, out, in), nil
}

// Smoothing returns the smoothing vector the weight was made with, or nil for
// an unsmoothed weight.
func (w *Weight) Smoothing() ([]float32, error) {
	if err := w.usable(); err != nil {
		return nil, err
	}
	s := make([]float32, w.in)
	var smoothed C.int32_t
	err := call(func() C.int32_t {
		return C.llmint8_weight_smoothing(w.p, (*C.float)(ptr(s)), C.size_t(len(s)), &smoothed)
	})
	runtime.KeepAlive(w)
	if err != nil || smoothed == 0 {
		return nil, err
	}
	return s, nil
}

// FromInt8 takes bitsandbytes' CB (row-major int8 [len(scb), in]) and SCB as they are.
func (c *Context) FromInt8(cb []int8, scb []float32, in int, bias []float32) (*Weight, error) {
	out := len(scb)
	if out == 0 || in <= 0 || len(cb) != out*in {
		return nil, shapeError("CB has %d elements, expected %d × %d", len(cb), out, in)
	}
	if bias != nil && len(bias) != out {
		return nil, shapeError("bias has %d elements, expected %d", len(bias), out)
	}
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		return C.llmint8_weight_from_int8(c.p, (*C.int8_t)(ptr(cb)), (*C.float)(ptr(scb)), C.size_t(out), C.size_t(in),
			ptr(bias), C.LLMINT8_F32, &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(cb)
	runtime.KeepAlive(scb)
	runtime.KeepAlive(bias)
	if err != nil {
		return nil, err
	}
	return newWeight(p, out, in), nil
}

// Export returns bitsandbytes' layout: row-major CB [out, in] and SCB [out].
func (w *Weight) Export() (cb []int8, scb []float32, err error) {
	if err := w.usable(); err != nil {
		return nil, nil, err
	}
	cb, scb = make([]int8, w.out*w.in), make([]float32, w.out)
	err = call(func() C.int32_t { return C.llmint8_weight_export(w.p, (*C.int8_t)(ptr(cb)), (*C.float)(ptr(scb))) })
	runtime.KeepAlive(w)
	if err != nil {
		return nil, nil, err
	}
	return cb, scb, nil
}

// Memory returns the bytes the weight holds in host and in device memory
// (what an engine budgets for the layer; a CPU weight's device bytes are 0).
func (w *Weight) Memory() (hostBytes, deviceBytes uint64, err error) {
	if err := w.usable(); err != nil {
		return 0, 0, err
	}
	var host, device C.uint64_t
	err = call(func() C.int32_t { return C.llmint8_weight_memory(w.p, &host, &device) })
	runtime.KeepAlive(w)
	return uint64(host), uint64(device), err
}

func (c *Context) matmul(w *Weight, x unsafe.Pointer, xlen int, xt dtype, y unsafe.Pointer, ylen int, yt dtype, threshold float32) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.in == 0 || xlen%w.in != 0 {
		return 0, shapeError("x has %d elements, not a multiple of in_features %d", xlen, w.in)
	}
	rows := xlen / w.in
	if ylen != rows*w.out {
		return 0, shapeError("y has %d elements, expected %d × %d", ylen, rows, w.out)
	}
	var stats C.llmint8_matmul_stats
	err := call(func() C.int32_t {
		// Go slices are host memory: the host entry point works on any backend.
		return C.llmint8_matmul_host(c.p, w.p, x, C.int32_t(xt), C.size_t(rows), C.float(threshold), y, C.int32_t(yt), &stats)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(w)
	return int(stats.outlier_columns), err
}

// MatmulF32 computes y = x · Wᵀ + b with LLM.int8() into y: x is [rows, in],
// y is [rows, out], both row-major float32, rows = len(x) / in. It returns the
// number of outlier columns. threshold 0 turns the decomposition off.
func (c *Context) MatmulF32(w *Weight, x, y []float32, threshold float32) (int, error) {
	n, err := c.matmul(w, ptr(x), len(x), f32, ptr(y), len(y), f32, threshold)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return n, err
}

// MatmulSharedInputF32 computes ys[i] = x · Ws[i]ᵀ + b[i] for weights that
// share their input (q/k/v, gate/up) in one call: x is quantized and its
// outlier columns found once, and every ys[i] holds what MatmulF32 would write
// for ws[i]. Every weight has the same in_features; x is [rows, in], ys[i] is
// [rows, out of ws[i]]. It returns the number of outlier columns.
func (c *Context) MatmulSharedInputF32(ws []*Weight, x []float32, ys [][]float32, threshold float32) (int, error) {
	if len(ws) == 0 || len(ws) != len(ys) {
		return 0, &Error{Status: StatusInvalidArgument,
			Message: fmt.Sprintf("%d weights and %d outputs: give at least one of each, as many outputs as weights", len(ws), len(ys))}
	}
	for _, w := range ws {
		if err := w.usable(); err != nil {
			return 0, err
		}
	}
	in := ws[0].in
	if in == 0 || len(x)%in != 0 {
		return 0, shapeError("x has %d elements, not a multiple of in_features %d", len(x), in)
	}
	rows := len(x) / in
	total := 0
	for i, w := range ws {
		if w.in != in {
			return 0, shapeError("ws[%d] has in_features %d, ws[0] %d: a shared input needs the same", i, w.in, in)
		}
		if len(ys[i]) != rows*w.out {
			return 0, shapeError("ys[%d] has %d elements, expected %d × %d", i, len(ys[i]), rows, w.out)
		}
		total += len(ys[i])
	}
	// cgo lets C hold no Go pointers: the handle and output arrays, and the
	// outputs themselves, live in C memory for the call; x is passed as it is.
	handles := (*[1 << 28]*C.llmint8_weight)(C.malloc(C.size_t(len(ws)) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:len(ws):len(ws)]
	outs := (*[1 << 28]unsafe.Pointer)(C.malloc(C.size_t(len(ws)) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:len(ws):len(ws)]
	buffer := (*[1 << 30]float32)(C.malloc(C.size_t(total+1) * 4))[: total+1 : total+1]
	defer C.free(unsafe.Pointer(&handles[0]))
	defer C.free(unsafe.Pointer(&outs[0]))
	defer C.free(unsafe.Pointer(&buffer[0]))
	at := 0
	for i, w := range ws {
		handles[i] = w.p
		outs[i] = unsafe.Pointer(&buffer[at])
		at += len(ys[i])
	}
	var stats C.llmint8_matmul_stats
	err := call(func() C.int32_t {
		return C.llmint8_matmul_shared_input_host(c.p, (**C.llmint8_weight)(unsafe.Pointer(&handles[0])), C.size_t(len(ws)),
			ptr(x), C.int32_t(f32), C.size_t(rows), C.float(threshold), (*unsafe.Pointer)(unsafe.Pointer(&outs[0])),
			C.int32_t(f32), &stats)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(ws)
	runtime.KeepAlive(x)
	if err != nil {
		return 0, err
	}
	at = 0
	for i := range ys {
		at += copy(ys[i], buffer[at:at+len(ys[i])])
	}
	return int(stats.outlier_columns), nil
}

// MatmulF16 is MatmulF32 with raw float16 bits in and out.
func (c *Context) MatmulF16(w *Weight, x, y []uint16, threshold float32) (int, error) {
	n, err := c.matmul(w, ptr(x), len(x), f16, ptr(y), len(y), f16, threshold)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return n, err
}

// MatmulBF16 is MatmulF32 with raw bfloat16 bits in and out.
func (c *Context) MatmulBF16(w *Weight, x, y []uint16, threshold float32) (int, error) {
	n, err := c.matmul(w, ptr(x), len(x), bf16, ptr(y), len(y), bf16, threshold)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return n, err
}

// QuantizeDevice quantizes a row-major [out, in] weight of wType that is
// already in the device memory of a CUDA context (w a device address, e.g.
// from a CUDA library), on the device; bias is nil or host float32 [out].
// Waits for the quantization. ErrUnsupported on a CPU context;
// ErrInvalidArgument when w is not device memory of the context's device.
func (c *Context) QuantizeDevice(w uintptr, wType DType, out, in int, bias []float32) (*Weight, error) {
	if out <= 0 || in <= 0 {
		return nil, shapeError("weight shape %d × %d", out, in)
	}
	if bias != nil && len(bias) != out {
		return nil, shapeError("bias has %d elements, expected %d", len(bias), out)
	}
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		return C.llmint8_weight_quantize_device(c.p, C.llmint8_go_device(C.uintptr_t(w)), C.int32_t(wType),
			C.size_t(out), C.size_t(in), ptr(bias), C.LLMINT8_F32, &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(bias)
	if err != nil {
		return nil, err
	}
	return newWeight(p, out, in), nil
}

// MatmulDevice computes y = x · Wᵀ + b on a CUDA context's device memory: x
// and y are device addresses of row-major [rows, in] xType and [rows, out]
// yType. The work is only queued on the context's stream (SetStream): wait
// with Synchronize, or on the stream, before reading y, and keep x unchanged
// until then. ErrUnsupported on a CPU context (use MatmulF32 and friends);
// ErrInvalidArgument when x or y is not device memory of the context's device.
func (c *Context) MatmulDevice(w *Weight, x uintptr, xType DType, rows int, y uintptr, yType DType, threshold float32) error {
	if err := w.usable(); err != nil {
		return err
	}
	if rows < 0 {
		return shapeError("rows = %d", rows)
	}
	// On a CPU context llmint8_matmul would read the addresses as host memory.
	var backend C.int32_t
	if err := call(func() C.int32_t { return C.llmint8_context_backend(c.p, &backend) }); err != nil {
		return err
	}
	if backend != C.LLMINT8_BACKEND_CUDA {
		return &Error{Status: StatusUnsupported,
			Message: "MatmulDevice takes device memory and needs a CUDA context (MatmulF32 and friends take slices)"}
	}
	err := call(func() C.int32_t {
		return C.llmint8_matmul(c.p, w.p, C.llmint8_go_device(C.uintptr_t(x)), C.int32_t(xType), C.size_t(rows),
			C.float(threshold), C.llmint8_go_device(C.uintptr_t(y)), C.int32_t(yType), nil)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(w)
	return err
}

// TensorKind says what a checkpoint tensor is for (LLMINT8_KIND_*).
type TensorKind int32

// The kinds of checkpoint tensors.
const (
	KindOther        TensorKind = C.LLMINT8_KIND_OTHER         // used as it is: norms, embeddings, lm_head
	KindLinearWeight TensorKind = C.LLMINT8_KIND_LINEAR_WEIGHT // 16/32-bit linear weight: Load quantizes it
	KindInt8Weight   TensorKind = C.LLMINT8_KIND_INT8_WEIGHT   // bitsandbytes 8-bit weight: Load takes it
	KindInt8Scales   TensorKind = C.LLMINT8_KIND_INT8_SCALES   // the SCB of an int8 weight
	KindWeightFormat TensorKind = C.LLMINT8_KIND_WEIGHT_FORMAT // the weight_format of an int8 weight
	KindBias         TensorKind = C.LLMINT8_KIND_BIAS          // the bias of a linear or int8 weight
	KindKeptColumns  TensorKind = C.LLMINT8_KIND_KEPT_COLUMNS  // the 16/32-bit columns a weight keeps: Load reads them
	KindKeptValues   TensorKind = C.LLMINT8_KIND_KEPT_VALUES   // the values of those columns: Load reads them
)

// TensorInfo describes one tensor of a checkpoint.
type TensorInfo struct {
	Name      string
	DTypeName string // as the file spells it: "F16", "I8", ...
	File      string
	DType     int32 // LLMINT8_TENSOR_*
	Kind      TensorKind
	Shape     []uint64
	NumBytes  uint64
}

// Prefix is the layer name Load takes: the tensor name without its last component.
func (t TensorInfo) Prefix() string {
	for i := len(t.Name) - 1; i >= 0; i-- {
		if t.Name[i] == '.' {
			return t.Name[:i]
		}
	}
	return ""
}

// Checkpoint is an open safetensors file, shard index or model directory
// (memory-mapped, read-only). It may be used by many goroutines at once.
type Checkpoint struct{ p *C.llmint8_checkpoint }

// OpenCheckpoint opens a .safetensors file, a shard index or a model directory.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var p *C.llmint8_checkpoint
	if err := call(func() C.int32_t { return C.llmint8_checkpoint_open(cpath, &p) }); err != nil {
		return nil, err
	}
	c := &Checkpoint{p: p}
	runtime.SetFinalizer(c, (*Checkpoint).Close)
	return c, nil
}

// Close unmaps the files; calling it again does nothing. Loaded weights stay valid.
func (c *Checkpoint) Close() error {
	if c.p != nil {
		C.llmint8_checkpoint_destroy(c.p)
		c.p = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Tensors lists every tensor, sorted by name.
func (c *Checkpoint) Tensors() ([]TensorInfo, error) {
	var n C.size_t
	if err := call(func() C.int32_t { return C.llmint8_checkpoint_num_tensors(c.p, &n) }); err != nil {
		return nil, err
	}
	out := make([]TensorInfo, 0, int(n))
	for i := 0; i < int(n); i++ {
		var info C.llmint8_tensor_info
		if err := call(func() C.int32_t { return C.llmint8_checkpoint_tensor_info(c.p, C.size_t(i), &info) }); err != nil {
			return nil, err
		}
		ndim := int(info.ndim)
		if ndim > C.LLMINT8_MAX_DIMS {
			ndim = C.LLMINT8_MAX_DIMS
		}
		shape := make([]uint64, ndim)
		for d := range shape {
			shape[d] = uint64(info.shape[d])
		}
		out = append(out, TensorInfo{
			Name: C.GoString(info.name), DTypeName: C.GoString(info.dtype_name), File: C.GoString(info.file),
			DType: int32(info.dtype), Kind: TensorKind(info.kind), Shape: shape, NumBytes: uint64(info.num_bytes),
		})
	}
	runtime.KeepAlive(c)
	return out, nil
}

// Find is the index of the tensor called name; an *Error with StatusNotFound when there is none.
func (c *Checkpoint) Find(name string) (int, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var index C.size_t
	err := call(func() C.int32_t { return C.llmint8_checkpoint_find(c.p, cname, &index) })
	runtime.KeepAlive(c)
	return int(index), err
}

// Read returns the raw little-endian bytes of tensor index, as stored.
func (c *Checkpoint) Read(index int) ([]byte, error) {
	if index < 0 {
		return nil, shapeError("tensor index %d is negative", index)
	}
	var info C.llmint8_tensor_info
	if err := call(func() C.int32_t { return C.llmint8_checkpoint_tensor_info(c.p, C.size_t(index), &info) }); err != nil {
		return nil, err
	}
	buf := make([]byte, uint64(info.num_bytes))
	err := call(func() C.int32_t {
		return C.llmint8_checkpoint_read(c.p, C.size_t(index), ptr(buf), C.size_t(len(buf)))
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(buf)
	if err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *Context) weightWithShape(p *C.llmint8_weight) (*Weight, error) {
	var out, in C.size_t
	if err := call(func() C.int32_t { return C.llmint8_weight_shape(p, &out, &in) }); err != nil {
		C.llmint8_weight_destroy(p)
		return nil, err
	}
	return newWeight(p, int(out), int(in)), nil
}

// Load loads the linear layer prefix of an open checkpoint: quantized when
// 16/32-bit, taken as it is when bitsandbytes' int8 (+ SCB); with its bias.
func (c *Context) Load(ck *Checkpoint, prefix string) (*Weight, error) {
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	var p *C.llmint8_weight
	err := call(func() C.int32_t { return C.llmint8_weight_load(c.p, ck.p, cprefix, &p) })
	runtime.KeepAlive(c)
	runtime.KeepAlive(ck)
	if err != nil {
		return nil, err
	}
	return c.weightWithShape(p)
}

// LoadRows loads output rows [rowBegin, rowEnd) of the linear layer prefix:
// one rank's shard of a column-parallel layer (out_features split across the
// ranks of a tensor-parallel world), reading only those rows. The ranks'
// outputs side by side are the whole layer's bit for bit. An empty range or
// one past out_features is StatusShape.
func (c *Context) LoadRows(ck *Checkpoint, prefix string, rowBegin, rowEnd int) (*Weight, error) {
	if rowBegin < 0 || rowEnd < 0 {
		return nil, &Error{Status: StatusShape, Message: fmt.Sprintf("rows %d..%d: negative", rowBegin, rowEnd)}
	}
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		return C.llmint8_weight_load_rows(c.p, ck.p, cprefix, C.size_t(rowBegin), C.size_t(rowEnd), &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(ck)
	if err != nil {
		return nil, err
	}
	return c.weightWithShape(p)
}

// LoadColumns loads input columns [colBegin, colEnd) of the linear layer
// prefix: one rank's shard of a row-parallel layer (o_proj, down_proj), each
// row's scale from the whole row, the shard starting at column 0 carrying the
// bias. Use it with RowParallelStatisticsF32 and MatmulRowParallelF32.
func (c *Context) LoadColumns(ck *Checkpoint, prefix string, colBegin, colEnd int) (*Weight, error) {
	if colBegin < 0 || colEnd < 0 {
		return nil, &Error{Status: StatusShape, Message: fmt.Sprintf("columns %d..%d: negative", colBegin, colEnd)}
	}
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	var p *C.llmint8_weight
	err := call(func() C.int32_t {
		return C.llmint8_weight_load_columns(c.p, ck.p, cprefix, C.size_t(colBegin), C.size_t(colEnd), &p)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(ck)
	if err != nil {
		return nil, err
	}
	return c.weightWithShape(p)
}

// RowParallelStatisticsF32 is stage 1 of a row-parallel matmul: rowAbsmax
// [rows] gets the statistics of this rank's slice x [rows, in of w]; the
// engine all-reduces them with MAX across the ranks and passes the result to
// MatmulRowParallelF32. It returns the slice's number of outlier columns.
func (c *Context) RowParallelStatisticsF32(w *Weight, x, rowAbsmax []float32, threshold float32) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.in == 0 || len(x)%w.in != 0 {
		return 0, shapeError("x has %d elements, not a multiple of in_features %d", len(x), w.in)
	}
	rows := len(x) / w.in
	if len(rowAbsmax) != rows {
		return 0, shapeError("rowAbsmax has %d elements, expected %d (the rows of x)", len(rowAbsmax), rows)
	}
	var stats C.llmint8_matmul_stats
	err := call(func() C.int32_t {
		return C.llmint8_row_parallel_statistics_host(c.p, w.p, ptr(x), C.int32_t(f32), C.size_t(rows), C.float(threshold),
			(*C.float)(ptr(rowAbsmax)), &stats)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(w)
	runtime.KeepAlive(x)
	runtime.KeepAlive(rowAbsmax)
	return int(stats.outlier_columns), err
}

// MatmulRowParallelF32 is stage 2: this rank's partial y [rows, out] of its
// shard w and slice x, each row quantized with rowAbsmax (the MAX over the
// ranks of RowParallelStatisticsF32); the engine all-reduces the partials
// with SUM. A rowAbsmax entry below the slice's own, NaN or negative is an
// InvalidArgument error.
func (c *Context) MatmulRowParallelF32(w *Weight, x, rowAbsmax, y []float32, threshold float32) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	if w.in == 0 || len(x)%w.in != 0 {
		return 0, shapeError("x has %d elements, not a multiple of in_features %d", len(x), w.in)
	}
	rows := len(x) / w.in
	if len(rowAbsmax) != rows || len(y) != rows*w.out {
		return 0, shapeError("rowAbsmax has %d elements and y %d, expected %d and %d × %d", len(rowAbsmax), len(y), rows, rows, w.out)
	}
	var stats C.llmint8_matmul_stats
	err := call(func() C.int32_t {
		return C.llmint8_matmul_row_parallel_host(c.p, w.p, ptr(x), C.int32_t(f32), C.size_t(rows), C.float(threshold),
			(*C.float)(ptr(rowAbsmax)), ptr(y), C.int32_t(f32), &stats)
	})
	runtime.KeepAlive(c)
	runtime.KeepAlive(w)
	runtime.KeepAlive(x)
	runtime.KeepAlive(rowAbsmax)
	runtime.KeepAlive(y)
	return int(stats.outlier_columns), err
}

// LoadSafetensors opens path, loads the layer prefix and closes the file again.
func (c *Context) LoadSafetensors(path, prefix string) (*Weight, error) {
	cpath, cprefix := C.CString(path), C.CString(prefix)
	defer C.free(unsafe.Pointer(cpath))
	defer C.free(unsafe.Pointer(cprefix))
	var p *C.llmint8_weight
	err := call(func() C.int32_t { return C.llmint8_weight_load_safetensors(c.p, cpath, cprefix, &p) })
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	return c.weightWithShape(p)
}

// SaveSafetensors writes the weight to a safetensors file as transformers +
// bitsandbytes save a Linear8bitLt (PREFIX.weight, .SCB, .weight_format, .bias).
func (w *Weight) SaveSafetensors(path, prefix string) error {
	if err := w.usable(); err != nil {
		return err
	}
	cpath, cprefix := C.CString(path), C.CString(prefix)
	defer C.free(unsafe.Pointer(cpath))
	defer C.free(unsafe.Pointer(cprefix))
	err := call(func() C.int32_t { return C.llmint8_weight_save_safetensors(w.p, cpath, cprefix) })
	runtime.KeepAlive(w)
	return err
}
