module llmint8.dev/example

go 1.19

require llmint8.dev/llmint8 v0.0.0

replace llmint8.dev/llmint8 => ../../bindings/go
