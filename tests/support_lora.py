"""Reference greedy decoding with transformers (+ peft for an adapter), float32, for tests to compare against.

Plain argmax over the logits, one token at a time with the KV cache: no sampling, no generation_config
(repetition penalty, EOS handling, ...), so it is exactly what a greedy vLLM request with `ignore_eos=True`
computes.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _load(base_model_path: str, adapter_path: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    return model


def greedy_token_ids(
    base_model_path: str,
    prompt_ids: list[int],
    max_new_tokens: int,
    adapter_path: str | None = None,
    stop_token_ids: tuple[int, ...] = (),
) -> list[int]:
    """The `max_new_tokens` ids greedy decoding appends to `prompt_ids` (fewer if one of `stop_token_ids` comes,
    which is then included, as vLLM reports it)."""
    import torch

    model = _load(str(base_model_path), None if adapter_path is None else str(adapter_path))
    out: list[int] = []
    with torch.no_grad():
        inputs = torch.tensor([list(prompt_ids)], dtype=torch.long)
        past = None
        for _ in range(max_new_tokens):
            result = model(input_ids=inputs, past_key_values=past, use_cache=True)
            past = result.past_key_values
            token = int(result.logits[0, -1].argmax())
            out.append(token)
            if token in stop_token_ids:
                break
            inputs = torch.tensor([[token]], dtype=torch.long)
    return out


def greedy_margins(base_model_path: str, prompt_ids: list[int], new_ids: list[int], adapter_path: str | None = None):
    """Logit gap between the top-1 and top-2 tokens at each step of `new_ids` (a small one is a knife edge
    where kernels' rounding may flip a greedy choice)."""
    import torch

    model = _load(str(base_model_path), None if adapter_path is None else str(adapter_path))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt_ids) + list(new_ids)])).logits[0]
    steps = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(new_ids)]
    top2 = steps.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()
