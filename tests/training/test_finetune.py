"""Fine-tuning end to end through `webtext finetune`, on the pretraining engine and checkpoints: a tiny model learns
a synthetic QA set (stated thresholds below), starts from one of our pretraining runs, resumes exactly where it
stopped, runs under Ray Train, and refuses bad data before any process starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jobs.cli import main
from training.finetune_data import TEMPLATE_FILE
from training.hf import export_hf
from training.model import GPT, GPTConfig
from tests.helpers import COLORS, OBJECTS, qa_records, write_config, write_jsonl

# The learning test's claims: the answer-token loss on held-out questions falls at least this many times below
# the starting model's, and at least this fraction of held-out questions is answered exactly.
LOSS_FALL_FACTOR = 10.0
MIN_EXACT_MATCH = 0.8

def base_model(tmp_path, block_size=64):
    """A stand-in pretrained model (random weights) as a Hugging Face export."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=block_size, vocab_size=50257, pad_vocab_to=64)
    model = GPT(config)
    return export_hf(model, config, tmp_path / "base"), model


def answer_loss(model: GPT, npz_path) -> float:
    with np.load(npz_path) as data:
        x, y = torch.from_numpy(data["inputs"].astype(np.int64)), torch.from_numpy(data["targets"].astype(np.int64))
    with torch.no_grad():
        return model.eval()(x, y)[1].item()


@pytest.mark.slow
def test_tiny_model_learns_synthetic_qa(tmp_path, capsys):
    base_dir, base = base_model(tmp_path)
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records())
    out = tmp_path / "run"
    config = write_config(tmp_path / "ft.yaml", out)
    assert main(["finetune", "--from", str(base_dir), "--data", data, "--config", config]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 130 and summary["bad_steps"] == 0
    assert summary["val_qa_examples"] == summary["val_examples"] > 10
    assert "<h2>Training: finetune</h2>" in (out / "report.html").read_text()  # the job ends with its report

    from training.generate import load_model

    tuned, template = load_model(out)
    assert template is not None and (out / TEMPLATE_FILE).is_file()
    before, after = answer_loss(base, out / "data" / "val.npz"), answer_loss(tuned, out / "data" / "val.npz")
    assert after * LOSS_FALL_FACTOR < before, (before, after)
    assert summary["val_exact_match"] >= MIN_EXACT_MATCH, summary
    assert abs(summary["val_loss"] - after) < 0.5  # the loop's validation loss is the answer loss too
    from training.metrics import read_metrics

    logged = read_metrics(out / "metrics.jsonl")
    assert any(r.get("val_exact_match") == summary["val_exact_match"] and r["step"] == 130 for r in logged)
    assert [r["step"] for r in logged if "loss" in r] == list(range(10, 131, 10))  # the training lines are kept
    answers = [json.loads(line) for line in (out / "exact_match.jsonl").read_text().splitlines()]
    held = [json.loads(line)["record"] for line in (out / "data" / "val_examples.jsonl").read_text().splitlines()]
    assert [a["question"] for a in answers] == [r["question"] for r in held][:len(answers)]
    assert [a["reference"] for a in answers] == [r["answer"] for r in held][:len(answers)]
    assert all(a["exact"] == (a["answer"] == a["reference"]) for a in answers)
    assert sum(a["exact"] for a in answers) / len(answers) == summary["val_exact_match"]
    assert "Held-out questions" in (out / "report.html").read_text()

    # the fine-tuned run generates through the CLI; held-out question, greedy
    held_out = json.loads((out / "data" / "val_examples.jsonl").read_text().splitlines()[0])["record"]
    prompt = template.qa_prompt(held_out["question"], held_out["context"])
    assert main(["generate", "--ckpt", str(out), "--prompt", prompt, "--temperature", "0",
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    completion = json.loads(capsys.readouterr().out.strip())["completion"]
    assert isinstance(completion, str) and len(completion) < 40


@pytest.mark.slow
def test_from_our_checkpoint_and_exact_resume(tmp_path, capsys):
    from tests.helpers import tiny_config, write_token_dataset
    from training.loop import train_worker

    # a short "pretraining" run of ours on GPT-2-sized ids, then fine-tune from its run directory
    shards = write_token_dataset(tmp_path / "shards", vocab_size=50257, n_train=1, tokens_per_shard=4000,
                                 n_val_tokens=2000)
    pre = tiny_config(shards, tmp_path / "pre", **{"model.vocab_size": 50257, "max_steps": 2,
                                                  "checkpoint.every": 2})
    train_worker(pre)
    records = qa_records()[:40]
    data = write_jsonl(tmp_path / "qa.jsonl", records)
    out = tmp_path / "ft"
    config = write_config(tmp_path / "ft.yaml", out, max_steps=4, **{"checkpoint.every": 2, "model.block_size": 32,
                                                                    "optim.warmup_steps": 2,
                                                                    "finetune.exact_match_examples": 0})
    assert main(["finetune", "--from", str(tmp_path / "pre"), "--data", data, "--config", config]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["resumed_from"] is None and first["step"] == 4
    assert (out / "init" / "SOURCE").read_text().strip().endswith("step_00000002")
    # the starting weights are the pretraining run's
    from training.generate import load_model

    pretrained, _ = load_model(tmp_path / "pre")
    from training.hf import import_hf

    init = import_hf(out / "init")
    assert torch.equal(init.transformer.h[0].attn.c_attn.weight, pretrained.transformer.h[0].attn.c_attn.weight)
    # The same run continued to 6 steps resumes at step 4; its weights equal one uninterrupted 6-step run's.
    config6 = write_config(tmp_path / "ft6.yaml", out, max_steps=6, **{"checkpoint.every": 2,
                                                                      "model.block_size": 32,
                                                                      "optim.warmup_steps": 2,
                                                                      "finetune.exact_match_examples": 0})
    assert main(["finetune", "--from", str(tmp_path / "pre"), "--data", data, "--config", config6]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["resumed_from"] == "step_00000004" and resumed["step"] == 6
    straight_config = write_config(tmp_path / "straight.yaml", tmp_path / "straight", max_steps=6,
                                   **{"checkpoint.every": 2, "model.block_size": 32, "optim.warmup_steps": 2,
                                      "finetune.exact_match_examples": 0})
    assert main(["finetune", "--from", str(tmp_path / "pre"), "--data", data, "--config", straight_config]) == 0
    a, _ = load_model(out)
    b, _ = load_model(tmp_path / "straight")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_bad_data_fails_before_training_with_file_and_line(tmp_path, capsys):
    base_dir, _ = base_model(tmp_path)
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "q?", "answer": "a"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    config = write_config(tmp_path / "ft.yaml", tmp_path / "run")
    assert main(["finetune", "--from", str(base_dir), "--data", str(data), "--config", config]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: no assistant message" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a config key that does not exist is named too
    assert main(["finetune", "--from", str(base_dir), "--data", str(data), "--config", config,
                 "--set", "finetune.val_fractio=0.5"]) == 2
    assert "val_fractio" in capsys.readouterr().err
    # seq_len beyond the starting model's block size (its config wins over model.block_size here)
    good = write_jsonl(tmp_path / "good.jsonl", qa_records()[:5])
    assert main(["finetune", "--from", str(base_dir), "--data", good, "--config", config,
                 "--set", "batch.seq_len=128", "--set", "model.block_size=128"]) == 2
    assert "block_size" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_on_ray_train_with_two_ranks_and_zero(tmp_path, capsys, ray_session):
    base_dir, _ = base_model(tmp_path)
    dialogues = [{"messages": [{"role": "system", "content": "Answer with one word."},
                               {"role": "user", "content": f"Colour of the {o}?"},
                               {"role": "assistant", "content": c}]} for o, c in zip(OBJECTS, COLORS)]
    completions = [{"prompt": f"The {o} is", "completion": f" {c}."} for o, c in zip(OBJECTS, reversed(COLORS))]
    qa = write_jsonl(tmp_path / "qa.jsonl", qa_records()[:40])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", dialogues + completions)
    out = tmp_path / "run"
    config = write_config(tmp_path / "ft.yaml", out, max_steps=4, **{
        "optim.warmup_steps": 2, "zero.stage": 1, "batch.micro_batch_size": 4, "batch.seq_len": 40,
        "checkpoint.every": 2,
        "checkpoint.export_hf": True, "finetune.max_new_tokens": 2,
        "launch": {"launcher": "ray", "num_workers": 2, "cpus_per_worker": 0.5, "threads_per_worker": 1}})
    assert main(["finetune", "--from", str(base_dir), "--data", qa, mixed, "--config", config]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_examples"] + summary["val_examples"] == 40 + len(dialogues) + len(completions)
    val_kinds = [json.loads(line)["kind"] for line in (out / "data" / "val_examples.jsonl").read_text().splitlines()]
    assert summary.get("val_qa_examples", 0) == val_kinds.count("qa")
    assert summary["world_size"] == 2 and summary["step"] == 4 and "val_exact_match" in summary
    assert (out / "hf" / TEMPLATE_FILE).is_file()
    # the HF export of the fine-tuned run generates the same greedy tokens as its ZeRO checkpoint
    from training.generate import Sampling, generate_ids, load_model

    ours, _ = load_model(out)
    exported, template = load_model(out / "hf")
    assert template is not None
    greedy = Sampling(max_new_tokens=6, temperature=0.0)
    assert generate_ids(ours, [[464, 3290, 318]], greedy) == generate_ids(exported, [[464, 3290, 318]], greedy)
    # from the ZeRO checkpoint through the CLI: stdout holds only the JSON lines (DeepSpeed's prints go to stderr)
    capsys.readouterr()
    assert main(["generate", "--ckpt", str(out), "--prompt", "Hi", "--temperature", "0", "--max-new-tokens", "2",
                 "--device", "cpu"]) == 0
    assert [json.loads(line)["prompt"] for line in capsys.readouterr().out.splitlines()] == ["Hi"]


