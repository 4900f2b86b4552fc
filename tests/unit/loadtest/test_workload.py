import json

import pytest

from loadtest.config import LoadTestConfig
from loadtest.workload import PromptFactory, build_jobs


def test_fallback_prompt_length_and_seed():
    config = LoadTestConfig(num_requests=3, input_tokens=50, max_tokens=7, seed=4)
    jobs = build_jobs(config, PromptFactory(), 3)
    assert [len(j.turns[0].text.split()) for j in jobs] == [50, 50, 50]
    assert [j.turns[0].max_tokens for j in jobs] == [7, 7, 7]
    assert jobs == build_jobs(config, PromptFactory(), 3)


def test_ranges_spread_lengths():
    config = LoadTestConfig(num_requests=50, input_tokens=100, input_tokens_range=0.5, max_tokens=20,
                            output_tokens_range=0.5)
    jobs = build_jobs(config, PromptFactory(), 50)
    lengths = {j.turns[0].expected_input_tokens for j in jobs}
    assert min(lengths) >= 50 and max(lengths) <= 150 and len(lengths) > 10
    assert all(10 <= j.turns[0].max_tokens <= 30 for j in jobs)


def test_jsonl_prompts_messages_and_turns(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "hello", "max_tokens": 5},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"turns": ["first", "second"]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = LoadTestConfig(num_requests=4, endpoint="chat", prompts_file=str(path), max_tokens=9)
    jobs = build_jobs(config, PromptFactory(), 4)
    assert jobs[0].turns[0].text == "hello" and jobs[0].turns[0].max_tokens == 5
    assert jobs[1].history == ({"role": "system", "content": "be brief"},)
    assert [t.text for t in jobs[2].turns] == ["first", "second"]
    assert jobs[3].turns == jobs[0].turns  # cycles
    with pytest.raises(ValueError, match="endpoint 'chat'"):
        build_jobs(LoadTestConfig(num_requests=3, prompts_file=str(path)), PromptFactory(), 3)


def test_tokenizer_gives_exact_lengths(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from loadtest.workload import _WORDS

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"])
    tokenizer.train_from_iterator([" ".join(_WORDS)] * 20, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(tmp_path)
    factory = PromptFactory(str(tmp_path))
    config = LoadTestConfig(num_requests=5, input_tokens=37, seed=1)
    for job in build_jobs(config, factory, 5):
        assert factory.count_tokens(job.turns[0].text) == 37
