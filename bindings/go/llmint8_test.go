package llmint8

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"llmint8.dev/llmint8/internal/cudadriver"
)

func f16Exact(f float32) uint16 { // float16 bits of a value float16 holds exactly
	u := math.Float32bits(f)
	if u&0x7fffffff == 0 {
		return uint16(u >> 16)
	}
	return uint16((u>>16)&0x8000 | (((u>>23)&0xff)-112)<<10 | (u&0x7fffff)>>13)
}

func fixture() (w, bias, x []float32, out, in, rows int) {
	out, in, rows = 5, 8, 3
	w, bias, x = make([]float32, out*in), make([]float32, out), make([]float32, rows*in)
	for i := range w {
		w[i] = float32(i*37%23-11) / 8
	}
	for j := range bias {
		bias[j] = 0.25 * float32(j)
	}
	for i := range x {
		x[i] = float32(i*13%17-8) / 4
	}
	x[1*in+6] = 9 // one outlier feature
	return
}

func mustContext(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewContext(BackendAuto, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

func TestMatmulAgainstDenseProduct(t *testing.T) {
	ctx := mustContext(t)
	w, bias, x, out, in, rows := fixture()
	weight, err := ctx.QuantizeF32(w, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	defer weight.Close()
	if o, i := weight.Shape(); o != out || i != in {
		t.Fatalf("shape %d×%d", o, i)
	}
	host, device, err := weight.Memory()
	if err != nil || host+device < uint64(out*in+8*out) {
		t.Fatalf("memory: host %d, device %d bytes, err %v", host, device, err)
	}
	if device == 0 { // a CPU context: a weight keeping two float32 columns holds 2·out floats more
		kept, err := ctx.QuantizeKeepF32(w, out, in, bias, []uint32{1, 0})
		if err != nil {
			t.Fatal(err)
		}
		if h, _, _ := kept.Memory(); h != host+uint64(8*out) {
			t.Fatalf("kept weight: host %d bytes, plain %d", h, host)
		}
		kept.Close()
		if _, err := ctx.QuantizeKeepF32(w, out, in, bias, []uint32{1, 1}); err == nil {
			t.Fatal("a column kept twice was accepted")
		}
	}
	y := make([]float32, rows*out)
	n, err := ctx.MatmulF32(weight, x, y, DefaultThreshold)
	if err != nil || n != 1 {
		t.Fatalf("outliers %d, err %v", n, err)
	}
	for i := 0; i < rows; i++ {
		for j := 0; j < out; j++ {
			dense, mag := float64(bias[j]), math.Abs(float64(bias[j]))
			for c := 0; c < in; c++ {
				p := float64(x[i*in+c]) * float64(w[j*in+c])
				dense, mag = dense+p, mag+math.Abs(p)
			}
			if d := math.Abs(float64(y[i*out+j]) - dense); d > 0.02*mag {
				t.Errorf("y[%d,%d] = %v, dense %v", i, j, y[i*out+j], dense)
			}
		}
	}
}

func TestSixteenBitInputsAndInt8RoundTrip(t *testing.T) {
	ctx := mustContext(t)
	w, bias, x, out, in, rows := fixture()
	wh, bh, xh := make([]uint16, len(w)), make([]uint16, len(bias)), make([]uint16, len(x))
	for i, v := range w {
		wh[i] = f16Exact(v)
	}
	for i, v := range bias {
		bh[i] = f16Exact(v)
	}
	for i, v := range x {
		xh[i] = f16Exact(v)
	}
	w32, err := ctx.QuantizeF32(w, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	w16, err := ctx.QuantizeF16(wh, out, in, bh)
	if err != nil {
		t.Fatal(err)
	}
	cb, scb, err := w32.Export()
	if err != nil {
		t.Fatal(err)
	}
	cb16, scb16, _ := w16.Export()
	for i := range cb {
		if cb[i] != cb16[i] {
			t.Fatalf("CB differs at %d", i)
		}
	}
	for i := range scb {
		if scb[i] != scb16[i] {
			t.Fatalf("SCB differs at %d", i)
		}
	}
	y16 := make([]uint16, rows*out)
	if n, err := ctx.MatmulF16(w16, xh, y16, DefaultThreshold); err != nil || n != 1 {
		t.Fatalf("f16 matmul: %d, %v", n, err)
	}
	wi, err := ctx.FromInt8(cb, scb, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	ya, yb := make([]float32, rows*out), make([]float32, rows*out)
	ctx.MatmulF32(w32, x, ya, 6)
	ctx.MatmulF32(wi, x, yb, 6)
	for i := range ya {
		if ya[i] != yb[i] {
			t.Fatalf("from_int8 result differs at %d: %v vs %v", i, ya[i], yb[i])
		}
	}
	ybf := make([]uint16, rows*out)
	xbf := make([]uint16, len(x))
	for i, v := range x {
		xbf[i] = uint16(math.Float32bits(v) >> 16) // these values are exact in bfloat16
	}
	if _, err := ctx.MatmulBF16(w32, xbf, ybf, 0); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAreGoErrors(t *testing.T) {
	ctx := mustContext(t)
	w, _, x, out, in, rows := fixture()
	if _, err := NewContext(BackendCUDA, 0); !errors.Is(err, ErrNoDevice) {
		t.Errorf("CUDA context: %v", err)
	}
	if err := ctx.SetStream(nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SetStream on a CPU context: %v", err)
	}
	if err := ctx.Reserve(16, 4096, 11008); err != nil {
		t.Errorf("Reserve on a CPU context: %v", err)
	}
	if err := ctx.Reserve(0, 4096, 4096); !errors.Is(err, &Error{Status: StatusShape}) {
		t.Errorf("Reserve(0 rows): %v", err)
	}
	if err := ctx.Synchronize(); err != nil {
		t.Errorf("Synchronize on a CPU context: %v", err)
	}
	if _, err := ctx.QuantizeDevice(1<<40, DTypeF32, out, in, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("QuantizeDevice on a CPU context: %v", err)
	}
	if _, err := ctx.QuantizeF32(w, out+1, in, nil); !errors.Is(err, ErrShape) {
		t.Errorf("wrong weight length: %v", err)
	}
	if _, err := ctx.QuantizeF32(w, out, in, []float32{1}); !errors.Is(err, ErrShape) {
		t.Errorf("wrong bias length: %v", err)
	}
	bad := append([]float32(nil), w...)
	bad[2*in+1] = float32(math.NaN())
	_, err := ctx.QuantizeF32(bad, out, in, nil)
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusInvalidArgument || !strings.Contains(e.Message, "row 2") {
		t.Errorf("NaN weight: %v", err)
	}
	weight, _ := ctx.QuantizeF32(w, out, in, nil)
	if _, err := ctx.MatmulF32(weight, x[:in+1], make([]float32, out), 6); !errors.Is(err, ErrShape) {
		t.Errorf("ragged x: %v", err)
	}
	if _, err := ctx.MatmulF32(weight, x, make([]float32, 1), 6); !errors.Is(err, ErrShape) {
		t.Errorf("short y: %v", err)
	}
	if _, err := ctx.MatmulF32(weight, x, make([]float32, rows*out), float32(math.NaN())); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NaN threshold: %v", err)
	}
	if _, err := ctx.FromInt8(make([]int8, 3), []float32{1, 2}, 2, nil); !errors.Is(err, ErrShape) {
		t.Errorf("short CB: %v", err)
	}
	if _, err := ctx.FromInt8(make([]int8, 4), []float32{1, -2}, 2, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("negative SCB: %v", err)
	}
	// Closed handles: errors, never crashes; Close is idempotent.
	weight.Close()
	weight.Close()
	if _, err := ctx.MatmulF32(weight, x, make([]float32, rows*out), 6); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "llmint8.Weight is nil or closed") {
		t.Errorf("closed weight: %v (the message names the Go handle, not a C parameter)", err)
	}
	if _, _, err := weight.Export(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("export of closed weight: %v", err)
	}
	ctx.Close()
	ctx.Close()
	if _, err := ctx.NumThreads(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("closed context: %v", err)
	}
	if errors.Is(err, ErrShape) {
		t.Errorf("a NaN-weight error must not match ErrShape")
	}
}

func TestConcurrentCallsAgree(t *testing.T) {
	ctx := mustContext(t)
	w, _, x, out, in, rows := fixture()
	weight, _ := ctx.QuantizeF32(w, out, in, nil)
	want := make([]float32, rows*out)
	ctx.MatmulF32(weight, x, want, 6)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			y := make([]float32, rows*out)
			for i := 0; i < 200; i++ {
				if _, err := ctx.MatmulF32(weight, x, y, 6); err != nil {
					errs <- err.Error()
					return
				}
				for k := range y {
					if y[k] != want[k] {
						errs <- "results differ"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	runtime.KeepAlive(weight)
}

func TestVersionAndThreads(t *testing.T) {
	ctx := mustContext(t)
	if Version() == "" {
		t.Error("empty version")
	}
	if err := ctx.SetNumThreads(2); err != nil {
		t.Fatal(err)
	}
	if n, _ := ctx.NumThreads(); n != 2 {
		t.Errorf("threads %d", n)
	}
	if err := ctx.SetRoundInputsToF16(true); err != nil {
		t.Fatal(err)
	}
	if err := ctx.SetRowScale(RowScaleInt8Part); err != nil {
		t.Fatal(err)
	}
	if r, _ := ctx.RowScale(); r != RowScaleInt8Part {
		t.Errorf("row scale %d", r)
	}
	if err := ctx.MatchBitsAndBytes(); err != nil {
		t.Fatal(err)
	}
	if r, _ := ctx.RowScale(); r != RowScaleBitsAndBytes {
		t.Errorf("row scale after MatchBitsAndBytes %d", r)
	}
	if err := ctx.SetRowScale(RowScale(7)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("row scale 7: %v", err)
	}
	if StatusShape.String() != "LLMINT8_ERR_SHAPE" {
		t.Errorf("status name %q", StatusShape.String())
	}
}

func TestCheckpoints(t *testing.T) {
	ctx, err := NewContext(BackendCPU, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	ck, err := OpenCheckpoint("../../tests/data/bnb-models/llama-sharded-f16-int8")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	tensors, err := ck.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	loaded := 0
	for _, info := range tensors {
		if info.Kind != KindInt8Weight {
			continue
		}
		w, err := ctx.Load(ck, info.Prefix())
		if err != nil {
			t.Fatal(err)
		}
		if out, in := w.Shape(); uint64(out) != info.Shape[0] || uint64(in) != info.Shape[1] {
			t.Errorf("%s: shape %d×%d, file says %v", info.Name, out, in, info.Shape)
		}
		w.Close()
		loaded++
	}
	if loaded != 14 {
		t.Errorf("loaded %d int8 layers, want 14", loaded)
	}
	i, err := ck.Find("model.norm.weight")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := ck.Read(i); err != nil || len(b) != 64*2 {
		t.Errorf("read model.norm.weight: %d bytes, %v", len(b), err)
	}
	if _, err := ck.Find("nope"); !errors.Is(err, &Error{Status: StatusNotFound}) {
		t.Errorf("Find(nope): %v", err)
	} else if text := err.Error(); strings.Count(text, "LLMINT8_ERR_NOT_FOUND") != 1 || !strings.HasPrefix(text, "llmint8: LLMINT8_ERR_NOT_FOUND: ") {
		t.Errorf("Find(nope): the status once, after the library's name: %q", text)
	}
	if _, err := ctx.Load(ck, "model.layers.5.mlp.up_proj"); !errors.Is(err, &Error{Status: StatusNotFound}) {
		t.Errorf("Load of a missing layer: %v", err)
	}
	// A column-parallel shard: rows 3..10 of up_proj are the whole layer's rows.
	whole, err := ctx.Load(ck, "model.layers.0.mlp.up_proj")
	if err != nil {
		t.Fatal(err)
	}
	shard, err := ctx.LoadRows(ck, "model.layers.0.mlp.up_proj", 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	_, k := whole.Shape()
	if out, in := shard.Shape(); out != 7 || in != k {
		t.Errorf("shard shape %d×%d, want 7×%d", out, in, k)
	}
	cbw, scbw, _ := whole.Export()
	cbs, scbs, _ := shard.Export()
	if !reflect.DeepEqual(cbs, cbw[3*k:10*k]) || !reflect.DeepEqual(scbs, scbw[3:10]) {
		t.Error("the shard's int8 rows differ from the whole layer's rows 3..10")
	}
	whole.Close()
	shard.Close()
	for _, r := range [][2]int{{4, 4}, {5, 2}, {-1, 3}, {0, 1 << 30}} {
		if _, err := ctx.LoadRows(ck, "model.layers.0.mlp.up_proj", r[0], r[1]); !errors.Is(err, &Error{Status: StatusShape}) {
			t.Errorf("LoadRows(%v): %v", r, err)
		}
	}
	// A row-parallel world of two from down_proj: statistics MAX'd, partials
	// summed, the whole layer's output within 1e-5 of its largest value.
	down, err := ctx.Load(ck, "model.layers.0.mlp.down_proj")
	if err != nil {
		t.Fatal(err)
	}
	n, hidden := down.Shape()
	const rows = 2
	x := make([]float32, rows*hidden)
	for i := range x {
		x[i] = float32((i*13)%17)/8 - 1
	}
	x[3] = 12 // an outlier in the first half
	y := make([]float32, rows*n)
	if _, err := ctx.MatmulF32(down, x, y, 6); err != nil {
		t.Fatal(err)
	}
	parts := [][2]int{{0, hidden / 2}, {hidden / 2, hidden}}
	slices := make([][]float32, 2)
	global := make([]float32, rows)
	shards := make([]*Weight, 2)
	for p, cols := range parts {
		shards[p], err = ctx.LoadColumns(ck, "model.layers.0.mlp.down_proj", cols[0], cols[1])
		if err != nil {
			t.Fatal(err)
		}
		for r := 0; r < rows; r++ {
			slices[p] = append(slices[p], x[r*hidden+cols[0]:r*hidden+cols[1]]...)
		}
		stats := make([]float32, rows)
		if _, err := ctx.RowParallelStatisticsF32(shards[p], slices[p], stats, 6); err != nil {
			t.Fatal(err)
		}
		for r := range global {
			global[r] = float32(math.Max(float64(global[r]), float64(stats[r])))
		}
	}
	sum := make([]float32, rows*n)
	for p := range parts {
		partial := make([]float32, rows*n)
		if _, err := ctx.MatmulRowParallelF32(shards[p], slices[p], global, partial, 6); err != nil {
			t.Fatal(err)
		}
		for i := range sum {
			sum[i] += partial[i]
		}
	}
	worst, top := 0.0, 0.0
	for i := range y {
		worst = math.Max(worst, math.Abs(float64(sum[i]-y[i])))
		top = math.Max(top, math.Abs(float64(y[i])))
	}
	if worst > 1e-5*top {
		t.Errorf("row-parallel sum differs from the whole layer by %g (outputs up to %g)", worst, top)
	}
	global[0] = -1
	if _, err := ctx.MatmulRowParallelF32(shards[0], slices[0], global, sum, 6); !errors.Is(err, &Error{Status: StatusInvalidArgument}) {
		t.Errorf("a negative row absmax: %v", err)
	}
	if _, err := ctx.LoadColumns(ck, "model.layers.0.mlp.down_proj", 0, hidden+1); !errors.Is(err, &Error{Status: StatusShape}) {
		t.Errorf("LoadColumns past in_features: %v", err)
	}
	for _, w := range append(shards, down) {
		w.Close()
	}
	if _, err := OpenCheckpoint("../../tests/data/none"); !errors.Is(err, &Error{Status: StatusNotFound}) {
		t.Errorf("OpenCheckpoint(none): %v", err)
	}

	w, err := ctx.LoadSafetensors("../../tests/data/tiny-llama-fp16", "model.layers.0.mlp.up_proj")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "up.safetensors")
	if err := w.SaveSafetensors(path, "up"); err != nil {
		t.Fatal(err)
	}
	back, err := ctx.LoadSafetensors(path, "up")
	if err != nil {
		t.Fatal(err)
	}
	cb1, scb1, _ := w.Export()
	cb2, scb2, _ := back.Export()
	if !reflect.DeepEqual(cb1, cb2) || !reflect.DeepEqual(scb1, scb2) {
		t.Error("a saved weight loads back different")
	}
	ck.Close()
	ck.Close()
	if _, err := ck.Tensors(); err == nil {
		t.Error("a closed checkpoint must refuse calls")
	}
}

// On the emulated GPU of the test command (tests/cuda_emu/fake_cuda.cpp, named
// by LLMINT8_LIBCUDA; scripts/test.sh runs this test so): a weight quantized
// from device memory and a matmul on device buffers give the CPU's results
// bit for bit.
func TestDeviceMemoryOnTheEmulatedGPU(t *testing.T) {
	if os.Getenv("LLMINT8_LIBCUDA") == "" {
		t.Skip("LLMINT8_LIBCUDA is not set: scripts/test.sh runs this test on the emulated GPU")
	}
	d, err := cudadriver.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	gpu, err := NewContext(BackendCUDA, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	cpu, err := NewContext(BackendCPU, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	w, bias, x, out, in, rows := fixture()

	wDev, err := cudadriver.Upload(d, w)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(wDev)
	wg, err := gpu.QuantizeDevice(wDev, DTypeF32, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	wc, err := cpu.QuantizeF32(w, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	cbG, scbG, err1 := wg.Export()
	cbC, scbC, err2 := wc.Export()
	if err1 != nil || err2 != nil || !reflect.DeepEqual(cbG, cbC) || !reflect.DeepEqual(scbG, scbC) {
		t.Fatalf("weights differ: %v %v", err1, err2)
	}

	xDev, err := cudadriver.Upload(d, x)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(xDev)
	got := make([]float32, rows*out)
	yDev, err := cudadriver.Upload(d, got)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(yDev)
	if err := gpu.MatmulDevice(wg, xDev, DTypeF32, rows, yDev, DTypeF32, DefaultThreshold); err != nil {
		t.Fatal(err)
	}
	if err := gpu.Synchronize(); err != nil {
		t.Fatal(err)
	}
	if err := cudadriver.Download(d, got, yDev); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, rows*out)
	if _, err := cpu.MatmulF32(wc, x, want, DefaultThreshold); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("y[%d] = %v on the GPU, %v on the CPU", i, got[i], want[i])
		}
	}
	// Slices through the host entry point agree too.
	host := make([]float32, rows*out)
	if n, err := gpu.MatmulF32(wg, x, host, DefaultThreshold); err != nil || n != 1 || !reflect.DeepEqual(host, want) {
		t.Fatalf("MatmulF32 on the GPU: %v, %d outliers", err, n)
	}
	// A CPU weight on the GPU context is refused; so is a matmul on a CPU context.
	if err := gpu.MatmulDevice(wc, xDev, DTypeF32, rows, yDev, DTypeF32, DefaultThreshold); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("CPU weight on a CUDA context: %v", err)
	}
	if err := cpu.MatmulDevice(wc, xDev, DTypeF32, rows, yDev, DTypeF32, DefaultThreshold); !errors.Is(err, ErrUnsupported) {
		t.Errorf("MatmulDevice on a CPU context: %v", err)
	}
}

func TestWeightsSharingAnInputGiveTheBitsOfSeparateCalls(t *testing.T) {
	ctx := mustContext(t)
	w, bias, x, out, in, rows := fixture()
	a, err := ctx.QuantizeF32(w, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ctx.QuantizeF32(w[:2*in], 2, in, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ya, yb := make([]float32, rows*out), make([]float32, rows*2)
	n, err := ctx.MatmulSharedInputF32([]*Weight{a, b}, x, [][]float32{ya, yb}, DefaultThreshold)
	if err != nil || n != 1 {
		t.Fatalf("outliers %d, err %v", n, err)
	}
	for i, pair := range []struct {
		w *Weight
		y []float32
	}{{a, ya}, {b, yb}} {
		alone := make([]float32, len(pair.y))
		if _, err := ctx.MatmulF32(pair.w, x, alone, DefaultThreshold); err != nil {
			t.Fatal(err)
		}
		for e := range alone {
			if math.Float32bits(alone[e]) != math.Float32bits(pair.y[e]) {
				t.Fatalf("weight %d, element %d: shared %v, alone %v", i, e, pair.y[e], alone[e])
			}
		}
	}
	if _, err := ctx.MatmulSharedInputF32([]*Weight{a, b}, x, [][]float32{ya}, DefaultThreshold); err == nil {
		t.Fatal("2 weights with 1 output were accepted")
	}
	if _, err := ctx.MatmulSharedInputF32([]*Weight{a, b}, x, [][]float32{ya, yb[:1]}, DefaultThreshold); err == nil {
		t.Fatal("a short output was accepted")
	}
}

// A weight smoothed by s is the plain weight of W·diag(s) multiplied by
// X·diag(1/s): the same outputs bit for bit; it reports its vector; a bad
// vector is refused.
func TestSmoothedWeightIsThePlainProductOfTheSmoothedOperands(t *testing.T) {
	ctx := mustContext(t)
	w, bias, x, out, in, rows := fixture()
	s := make([]float32, in)
	for c := range s {
		s[c] = 0.5 + float32(c%3)
	}
	smoothed, err := ctx.QuantizeSmoothedF32(w, out, in, s, bias, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer smoothed.Close()
	if got, err := smoothed.Smoothing(); err != nil || len(got) != in || got[1] != s[1] {
		t.Fatalf("Smoothing() = %v, %v", got, err)
	}
	ws, xs := make([]float32, len(w)), make([]float32, len(x))
	for i := range w {
		ws[i] = w[i] * s[i%in]
	}
	for i := range x {
		xs[i] = x[i] * (1 / s[i%in])
	}
	plain, err := ctx.QuantizeF32(ws, out, in, bias)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if got, err := plain.Smoothing(); err != nil || got != nil {
		t.Fatalf("an unsmoothed weight reports %v, %v", got, err)
	}
	y, want := make([]float32, rows*out), make([]float32, rows*out)
	if _, err := ctx.MatmulF32(smoothed, x, y, DefaultThreshold); err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.MatmulF32(plain, xs, want, DefaultThreshold); err != nil {
		t.Fatal(err)
	}
	for i := range y {
		if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
			t.Fatalf("y[%d] = %v, the smoothed operands give %v", i, y[i], want[i])
		}
	}
	s[2] = 0
	if _, err := ctx.QuantizeSmoothedF32(w, out, in, s, bias, nil); err == nil || err.(*Error).Status != StatusInvalidArgument {
		t.Fatalf("a zero factor: %v", err)
	}
}
