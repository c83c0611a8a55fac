"""One checkpoint resolver: what a path names (our run, its checkpoints/, one step_* checkpoint, a Hugging Face
GPT-2 directory in each weights format `training.hf` reads), and every reader of checkpoints agreeing on it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from training import evaluate, finetune, generate, loop
from training.config import TrainConfig
from training.hf import export_hf
from training.model import GPT, GPTConfig
from training.resolve import NOT_A_CHECKPOINT, resolve


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=512, pad_vocab_to=64)).eval()


def hf_dir(model, path, weights: str):
    """An export of `model` with its weights in one of the formats Hugging Face writes."""
    export_hf(model, model.config, path)
    state = load_file(str(path / "model.safetensors"))
    if weights == "sharded":
        names = sorted(state)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        for file, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(path / file))
        (path / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}))
        (path / "model.safetensors").unlink()
    elif weights == "bin":
        torch.save(state, path / "pytorch_model.bin")
        (path / "model.safetensors").unlink()
    return path


def same_weights(a: GPT, b: GPT) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("weights", ["safetensors", "sharded", "bin"])
def test_every_reader_takes_a_hf_directory_in_each_weights_format(model, weights, tmp_path):
    path = hf_dir(model, tmp_path / "hf", weights)
    found = resolve(path)
    assert (found.kind, found.path, found.run_dir, found.tag) == ("hf", path, None, None)

    cfg = TrainConfig.model_validate({"model": {"size": "tiny", "block_size": 32, "vocab_size": 512,
                                                "init_from": str(path)},
                                   "batch": {"seq_len": 32}})
    assert same_weights(generate.load_model(path)[0], model)  # webtext generate
    assert same_weights(evaluate.load_model(found, cfg), model)  # webtext eval
    assert same_weights(loop.build_model(cfg), model)  # model.init_from
    resolved, init_dir, dims = finetune.source_model(path, tmp_path / "ft")  # webtext finetune --from
    assert resolved.kind == "hf" and init_dir == path.resolve() and dims["n_layer"] == 2


def test_what_is_not_a_checkpoint_is_refused_by_every_reader_naming_the_path(model, tmp_path):
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    other = hf_dir(model, tmp_path / "other", "safetensors")
    (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()),
                                                   "model_type": "llama"}))
    for path in (no_weights, other, tmp_path / "empty-run"):
        path.mkdir(exist_ok=True)
        for read in (resolve, generate.load_model, lambda p: finetune.source_model(p, tmp_path / "ft")):
            with pytest.raises(FileNotFoundError, match=f"{path}: {NOT_A_CHECKPOINT}"):
                read(path)
    with pytest.raises(FileNotFoundError, match="nowhere: no such directory"):
        resolve(tmp_path / "nowhere")


def test_runs_checkpoints_and_steps_resolve_to_the_newest_complete_or_the_tag_asked_for(model, tmp_path):
    run = tmp_path / "run"
    for tag, complete in (("step_00000002", True), ("step_00000004", True), ("step_00000006", False)):
        (run / "checkpoints" / tag).mkdir(parents=True)
        if complete:
            (run / "checkpoints" / tag / "COMPLETE").write_text("{}\n")
    (run / "config.json").write_text(json.dumps({"model": {"size": "tiny"}}))  # ours: no model_type
    newest = run / "checkpoints" / "step_00000004"
    for source in (run, run / "checkpoints", newest):
        found = resolve(source)
        assert (found.kind, found.path, found.run_dir, found.tag) == ("checkpoint", newest, run, "step_00000004")
        assert found.ckpt_root == run / "checkpoints" and found.describe() == str(newest)
    older = resolve(run, "step_00000002")
    assert older.path == run / "checkpoints" / "step_00000002" and older.run_dir == run
    assert resolve(run / "checkpoints" / "step_00000002").tag == "step_00000002"
    with pytest.raises(FileNotFoundError, match="step_00000006: not a complete checkpoint"):
        resolve(run, "step_00000006")
    with pytest.raises(FileNotFoundError, match=f"{run / 'checkpoints' / 'step_00000006'}: {NOT_A_CHECKPOINT}"):
        resolve(run / "checkpoints" / "step_00000006")  # killed mid-save
    hf = hf_dir(model, tmp_path / "hf", "safetensors")
    with pytest.raises(FileNotFoundError, match="a Hugging Face directory has no checkpoint step_00000002"):
        resolve(hf, "step_00000002")
