module LLMInt8BFloat16sExt

using LLMInt8
using BFloat16s: BFloat16

LLMInt8.dtype_code(::Type{BFloat16}) = LLMInt8.LLMINT8_BF16

end
