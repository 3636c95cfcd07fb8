// Quantize a weight once, then run LLM.int8() matmuls with it, from Go.
//
//	cargo build --release && cd examples/go && go run .
package main

import (
	"fmt"
	"log"

	"llmint8.dev/llmint8"
)

func main() {
	ctx, err := llmint8.NewContext(llmint8.BackendAuto, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer ctx.Close()

	const out, in = 3, 4
	w := []float32{0.1, -0.2, 0.3, 0.4, 0.5, 0.6, -0.7, 0.8, -0.9, 1.0, 1.1, 1.2}
	bias := []float32{0.01, 0.02, 0.03}
	weight, err := ctx.QuantizeF32(w, out, in, bias)
	if err != nil {
		log.Fatal(err)
	}
	defer weight.Close()

	x := []float32{1, 2, 3, 4, 0.5, 9 /* an outlier */, -1, 0}
	y := make([]float32, 2*out)
	outliers, err := ctx.MatmulF32(weight, x, y, llmint8.DefaultThreshold)
	if err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		fmt.Printf("y[%d] = %8.4f %8.4f %8.4f\n", i, y[i*out], y[i*out+1], y[i*out+2])
	}
	fmt.Printf("outlier columns: %d\n", outliers)
}
