module llmint8.dev/llmint8

go 1.19
