"""The OpenAI endpoints serve_app serves: name, route and the top-level fields each body may hold.

Pure (no vLLM): the ingress routes and checks bodies with it. The vLLM side of each endpoint (its request type
and serving call) lives in serve_app/server/openai_frontend.py. The field sets are vLLM 0.32's request types'
fields and aliases; tests/unit/test_endpoints.py fails when vLLM's types and these sets drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI endpoint as the ingress sees it."""

    name: str
    route: str
    fields: frozenset[str]  # every top-level field its body may hold; any other is a 400 naming it


CHAT_FIELDS = frozenset((
    "add_generation_prompt", "add_special_tokens", "allowed_token_ids", "bad_words", "cache_salt", "chat_template",
    "chat_template_kwargs", "continue_final_message", "documents", "ec_transfer_params", "echo",
    "frequency_penalty", "ignore_eos", "include_reasoning", "include_stop_str_in_output", "kv_transfer_params",
    "length_penalty", "logit_bias", "logprob_token_ids", "logprobs", "max_completion_tokens", "max_tokens",
    "media_io_kwargs", "messages", "min_p", "min_tokens", "mm_payload", "mm_processor_kwargs", "model", "n",
    "parallel_tool_calls", "presence_penalty", "priority", "prompt_logprobs", "reasoning_effort",
    "repetition_detection", "repetition_penalty", "request_id", "response_format", "return_mm_kwargs",
    "return_prompt_text", "return_token_ids", "return_token_offsets", "return_tokens_as_token_ids",
    "routed_experts_prompt_start", "seed", "session_id", "skip_special_tokens", "spaces_between_special_tokens",
    "stop", "stop_token_ids", "stream", "stream_interval", "stream_options", "structured_outputs", "temperature",
    "thinking_token_budget", "tool_choice", "tools", "top_k", "top_logprobs", "top_p", "truncate_prompt_tokens",
    "truncation_side", "use_beam_search", "user", "vllm_xargs", "watermarking",
))

COMPLETION_FIELDS = frozenset((
    "add_special_tokens", "allowed_token_ids", "bad_words", "cache_salt", "ec_transfer_params", "echo",
    "frequency_penalty", "ignore_eos", "include_stop_str_in_output", "kv_transfer_params", "length_penalty",
    "logit_bias", "logprob_token_ids", "logprobs", "max_tokens", "min_p", "min_tokens", "mm_payload", "model", "n",
    "presence_penalty", "priority", "prompt", "prompt_embeds", "prompt_logprobs", "repetition_detection",
    "repetition_penalty", "request_id", "response_format", "return_mm_kwargs", "return_token_ids",
    "return_token_offsets", "return_tokens_as_token_ids", "routed_experts_prompt_start", "seed", "session_id",
    "skip_special_tokens", "spaces_between_special_tokens", "stop", "stop_token_ids", "stream", "stream_interval",
    "stream_options", "structured_outputs", "suffix", "temperature", "thinking_token_budget", "top_k", "top_p",
    "truncate_prompt_tokens", "truncation_side", "use_beam_search", "user", "vllm_xargs", "watermarking",
))

RESPONSES_FIELDS = frozenset((
    "background", "cache_salt", "chat_template_kwargs", "ec_transfer_params", "enable_response_messages",
    "frequency_penalty", "ignore_eos", "include", "include_reasoning", "include_stop_str_in_output", "input",
    "instructions", "kv_transfer_params", "logit_bias", "max_output_tokens", "max_tool_calls", "media_io_kwargs",
    "metadata", "min_p", "mm_payload", "mm_processor_kwargs", "model", "parallel_tool_calls", "presence_penalty",
    "previous_input_messages", "previous_response_id", "priority", "prompt", "prompt_cache_key", "reasoning",
    "repetition_penalty", "request_id", "return_mm_kwargs", "seed", "service_tier", "session_id",
    "skip_special_tokens", "stop", "stop_token_ids", "store", "stream", "structured_outputs", "temperature", "text",
    "tool_choice", "tools", "top_k", "top_logprobs", "top_p", "truncation", "user", "vllm_xargs", "watermarking",
))

CHAT = Endpoint("chat", "/v1/chat/completions", CHAT_FIELDS)
COMPLETION = Endpoint("completion", "/v1/completions", COMPLETION_FIELDS)
RESPONSES = Endpoint("responses", "/v1/responses", RESPONSES_FIELDS)
ENDPOINTS = {e.name: e for e in (CHAT, COMPLETION, RESPONSES)}
