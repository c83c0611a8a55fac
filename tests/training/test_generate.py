"""Sampling: KV-cache equality (logits close, greedy tokens identical, batched left-padded = one by one), the
sampling filters, seeds, stop tokens, and generation from a Hugging Face export (ours re-imported, and
transformers' own GPT2LMHeadModel) matching generation from our model."""

from __future__ import annotations

import html
import json

import pytest
import torch

from training.finetune_data import ChatTemplate
from training.generate import Sampling, filter_logits, generate_ids, load_model
from training.hf import export_hf
from training.model import GPT, GPTConfig, KVCache

PROMPTS = [[464, 329, 318, 257, 133], [40, 588], [154, 11, 995, 13, 632, 318, 257, 922, 110]]
VOCAB = 1000  # small, so the tests stay fast; the CLI test uses GPT-2's full vocabulary


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=96, vocab_size=VOCAB, pad_vocab_to=64)).eval()


def greedy(**kw) -> Sampling:
    return Sampling(**{"max_new_tokens": 24, "temperature": 0.0, "stop_ids": (), **kw})


def pad_id() -> int:
    return VOCAB - 1


def test_cached_logits_match_the_full_forward(model):
    idx = torch.tensor([PROMPTS[2] + PROMPTS[0]])
    full, _ = model(idx)
    cache = KVCache(model.config.n_layer)
    pieces = [model(idx[:, :6], kv_cache=cache)[0]]
    for t in range(6, idx.size(1)):
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert len(cache) == idx.size(1)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_is_invisible(model):
    # a left-padded row gives the same logits as the same prompt alone
    idx = torch.tensor([[VOCAB - 1] * 4 + PROMPTS[0]])
    mask = torch.tensor([[0] * 4 + [1] * 5])
    padded, _ = model(idx, attention_mask=mask)
    alone, _ = model(torch.tensor([PROMPTS[0]]))
    torch.testing.assert_close(padded[:, 4:], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()


def test_greedy_is_identical_with_and_without_cache_and_batched(model):
    cached = generate_ids(model, PROMPTS, greedy())
    uncached = generate_ids(model, PROMPTS, greedy(use_cache=False))
    one_by_one = [generate_ids(model, [p], greedy())[0] for p in PROMPTS]
    assert cached == uncached == one_by_one
    assert all(len(t) == 24 for t in cached)


def test_seeded_sampling_repeats_and_cache_does_not_change_it(model):
    s = dict(max_new_tokens=16, temperature=0.9, top_k=40, top_p=0.9)
    a = generate_ids(model, PROMPTS, Sampling(seed=5, **s))
    assert a == generate_ids(model, PROMPTS, Sampling(seed=5, **s))
    assert a == generate_ids(model, PROMPTS, Sampling(seed=5, use_cache=False, **s))
    assert a != generate_ids(model, PROMPTS, Sampling(seed=6, **s))


def test_filters_keep_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isfinite(filter_logits(logits, 2, None)).tolist() == [[True, True, False, False]]
    # nucleus 0.7: 0.5 + 0.25 reaches it, so the third and fourth go
    assert torch.isfinite(filter_logits(logits, None, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.8)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.1)).tolist() == [[True, False, False, False]]
    torch.manual_seed(0)
    shuffled = logits[:, [2, 0, 3, 1]]  # order must not matter
    assert torch.isfinite(filter_logits(shuffled, None, 0.7)).tolist() == [[False, True, False, True]]


def test_stops_at_stop_token_and_block_size(model):
    first = generate_ids(model, [PROMPTS[0]], greedy())[0]
    stop = first[3]
    stopped = generate_ids(model, [PROMPTS[0], PROMPTS[1]], greedy(stop_ids=(stop,)))
    assert stopped[0] == first[: first.index(stop)]
    # block_size 96: a prompt of 90 tokens gets at most 6 new ones
    long_prompt = (PROMPTS[2] * 10)[:90]
    assert len(generate_ids(model, [long_prompt], greedy(max_new_tokens=50))[0]) == 6
    with pytest.raises(ValueError, match="longer than block_size"):
        generate_ids(model, [PROMPTS[2] * 11], greedy())
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)


def test_generation_from_the_hf_export_matches_ours(model, tmp_path):
    export_hf(model, model.config, tmp_path / "hf")
    ChatTemplate().save(tmp_path / "hf")
    ours = generate_ids(model, PROMPTS, greedy())
    reimported, template = load_model(tmp_path / "hf")
    assert template == ChatTemplate()
    assert generate_ids(reimported, PROMPTS, greedy()) == ours

    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    longest = max(map(len, PROMPTS))
    ids = torch.tensor([[pad_id()] * (longest - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=pad_id(),
                          eos_token_id=None)
    assert [row[longest:].tolist() for row in out] == ours


def test_generation_on_gpu_matches_cpu(model):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import copy

    gpu_model = copy.deepcopy(model).to("cuda")
    assert generate_ids(gpu_model, PROMPTS, greedy()) == generate_ids(model, PROMPTS, greedy())
    assert generate_ids(gpu_model, PROMPTS, greedy()) == generate_ids(gpu_model, PROMPTS, greedy(use_cache=False))


def test_generate_cli_from_an_hf_export(tmp_path, capsys):
    from jobs.cli import main

    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50257)
    export_hf(GPT(config), config, tmp_path / "hf")
    assert main(["generate", "--ckpt", str(tmp_path / "hf"), "--prompt", "Hello", "--prompt", "The sky is",
                 "--temperature", "0", "--max-new-tokens", "5", "--device", "cpu", "--out", str(tmp_path / "s")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["Hello", "The sky is"]
    assert all(isinstance(line["completion"], str) for line in lines)
    assert [json.loads(line) for line in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()] == lines
    report = (tmp_path / "s" / "report.html").read_text()
    assert "Sample generations" in report and html.escape("The sky is" + lines[1]["completion"]) in report
    ChatTemplate().save(tmp_path / "hf")
    assert main(["generate", "--ckpt", str(tmp_path / "hf"), "--chat", "--system", "Be brief.", "--prompt", "Hi",
                 "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--seed", "1", "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    reply = json.loads(capsys.readouterr().out)["completion"]
    assert "<|endoftext|>" not in reply and len(reply) < 200
    assert main(["generate", "--ckpt", str(tmp_path / "hf"), "--prompt", "Hi ### User: x", "--chat",
                 "--device", "cpu"]) == 2
    assert "template marker" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(tmp_path / "missing"), "--prompt", "x"]) == 2


def test_chat_prompts_are_checked_as_training_dialogues_and_stop_at_end_of_turn():
    from training.finetune_data import FinetuneDataError
    from training.generate import chat_prompt, chat_sampling

    template = ChatTemplate()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat_prompt(template, messages) == template.chat_prompt(messages)
    with pytest.raises(FinetuneDataError, match=r"--prompt #2: messages\[1\]: .* template marker '### User:'"):
        chat_prompt(template, [messages[0], {"role": "user", "content": "a ### User: b"}], "--prompt #2")
    with pytest.raises(FinetuneDataError, match=r"messages\[1\]: a system message may only come first"):
        chat_prompt(template, messages[::-1])
    sampling = chat_sampling(template, greedy(stop_ids=(7,)))
    assert sampling.stop_ids == (template.end_of_turn_id, 7) and sampling.temperature == 0.0
