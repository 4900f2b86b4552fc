"""The model server: a vLLM engine with vLLM's own OpenAI frontend (prompt rendering, tokenization,
detokenization, stop strings, tools, structured output, logprobs) in one process."""
