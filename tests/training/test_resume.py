"""Resume against damaged checkpoints, one metrics line per step after a resume, and `webtext export`, on real
one-process DeepSpeed runs (the local launcher, in this process).

One 8-step run (checkpoints at steps 4 and 8) is made once and copied per test. A resumed run must equal it bit
for bit (fp32 on CPU), as in tests/training/test_run.py.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from jobs.cli import main as cli_main
from tests.helpers import run_tiny as run, tiny_config, write_token_dataset
from training import checkpoint
from training.checkpoint import CheckpointError
from training.config import TrainConfig
from training.metrics import losses_by_step
from training.model import GPT
from training.storage import COMPLETE, REJECTED, complete_tags

pytestmark = pytest.mark.slow  # DeepSpeed engines, a few seconds each

NEWEST, PREVIOUS = "step_00000008", "step_00000004"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_token_dataset(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run(data, out)
    assert complete_tags(out / "checkpoints") == [PREVIOUS, NEWEST]
    return out


def copy_run(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def metric_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("victim", ["mp_rank_00_model_states.pt", "trainer_rank0.pt"])
def test_a_damaged_newest_checkpoint_is_named_set_aside_and_the_previous_one_resumed(victim, data, finished,
                                                                                      tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    damaged = out / "checkpoints" / NEWEST / victim
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[: size // 2])  # cut in half
    capsys.readouterr()
    summary = run(data, out)  # the same command again
    warnings = [line for line in capsys.readouterr().err.splitlines() if "webtext: warning" in line]
    assert warnings == [f"webtext: warning: checkpoint {NEWEST} is damaged and set aside: {damaged}: {size // 2} "
                        f"bytes, {size} when it was saved; resuming from {PREVIOUS} instead"]
    assert summary["resumed_from"] == PREVIOUS and summary["step"] == 8
    # It continued from step 4 exactly as the uninterrupted run did, and saved step 8 again, whole.
    assert losses_by_step(out / "metrics.jsonl") == losses_by_step(finished / "metrics.jsonl")
    assert losses_by_step(out / "metrics.jsonl", "val_loss") == losses_by_step(finished / "metrics.jsonl", "val_loss")
    assert complete_tags(out / "checkpoints") == [PREVIOUS, NEWEST]
    assert checkpoint.verify(out / "checkpoints" / NEWEST) is None
    assert not (out / "checkpoints" / NEWEST / REJECTED).exists()
    # The lines the first run logged after step 4 were dropped, not repeated: one line per step and kind.
    train_steps = [r["step"] for r in metric_lines(out) if "loss" in r]
    assert train_steps == list(range(1, 9))
    assert [r["step"] for r in metric_lines(out) if "val_loss" in r] == [4, 8]


def test_a_run_started_afresh_is_the_one_a_later_rerun_resumes(data, finished, tmp_path):
    """checkpoint.resume=false in an out_dir holding a longer run's checkpoints: rerunning the command without it
    continues the fresh run, not the older run's newest checkpoint."""
    out = copy_run(finished, tmp_path)
    fresh = {"max_steps": 4, "seed": 8, "checkpoint.resume": False}
    assert run(data, out, **fresh)["resumed_from"] is None
    assert complete_tags(out / "checkpoints") == [PREVIOUS]
    assert (out / "checkpoints" / NEWEST / REJECTED).read_text().startswith("superseded")
    summary = run(data, out, **{**fresh, "checkpoint.resume": True})
    assert (summary["resumed_from"], summary["step"]) == (PREVIOUS, 4)


def test_resuming_with_another_seed_is_one_line_naming_the_checkpoint(data, finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    config = tmp_path / "config.json"  # JSON is YAML
    config.write_text(json.dumps(tiny_config(data, out, max_steps=12, seed=8)))
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("webtext:")] == [
        f"webtext: error: {out / 'checkpoints' / NEWEST}: data loader state: seed was 7, this loader has 8",
        "webtext: what to do: resume with the run's data and seed, or start afresh with --set checkpoint.resume=false"]
    assert "Traceback" not in err


def test_a_damaged_checkpoint_is_refused_by_readers_in_one_line(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    damaged = out / "checkpoints" / NEWEST / "mp_rank_00_model_states.pt"
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[:1000])
    capsys.readouterr()
    for command in (["eval", "--checkpoint", str(out)], ["export", "--checkpoint", str(out), "--out",
                                                           str(tmp_path / "hf")]):
        assert cli_main(command) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"webtext: error: {damaged}: 1000 bytes, {size} when it was saved",
            f"webtext: what to do: {CheckpointError.hint}"]
    assert not (tmp_path / "hf").exists()


def forge_manifest(tag_dir) -> None:
    """What a checkpoint without a manifest (or with a forged one) looks like: its COMPLETE matching its files."""
    (tag_dir / COMPLETE).write_text(json.dumps({"step": 8, "files": checkpoint.file_records(tag_dir)}))


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_or_a_file_cut_short_stops_the_cli_with_one_line_naming_it(data, finished, tmp_path,
                                                                                    capsys):
    out = copy_run(finished, tmp_path)
    config = tmp_path / "config.json"  # JSON is YAML
    config.write_text(json.dumps(tiny_config(data, out, max_steps=12, **{"optim.warmup_steps": 2})))
    planted = out / "checkpoints" / NEWEST / "trainer_rank0.pt"
    marker = tmp_path / "pwned"
    torch.save({"step": 8, "evil": Payload(marker)}, planted)
    forge_manifest(planted.parent)
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("webtext:")]
    assert len(errors) == 2 and errors[1] == f"webtext: what to do: {CheckpointError.hint}" and errors[0].startswith(
        f"webtext: error: {planted}: refused to load: it holds a pickled object that is not tensors or plain data (")
    assert "posix.system" in errors[0]  # what it would have called
    assert "Traceback" not in err and "weights_only" not in err
    assert not marker.exists()

    # A manifest cannot vouch for a file damaged before it was written: loading names the file.
    shutil.copyfile(finished / "checkpoints" / NEWEST / planted.name, planted)
    model_file = planted.parent / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    forge_manifest(planted.parent)
    assert cli_main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("webtext:")]
    assert len(errors) == 2 and errors[0].startswith(f"webtext: error: {model_file}: unreadable (")
    assert errors[1] == f"webtext: what to do: {CheckpointError.hint}"
    assert "Traceback" not in err


def test_export_writes_a_directory_transformers_loads_with_our_logits(finished, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    for tag in (None, PREVIOUS):
        out = tmp_path / f"hf-{tag}"
        capsys.readouterr()
        assert cli_main(["export", "--checkpoint", str(finished), "--out", str(out),
                         *(["--tag", tag] if tag else [])]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        expected_tag = tag or NEWEST
        assert result["checkpoint"] == str(finished / "checkpoints" / expected_tag)
        ours = GPT(TrainConfig.model_validate(json.loads((finished / "config.json").read_text())).model.gpt_config())
        ours.load_state_dict(checkpoint.consolidate(finished / "checkpoints", expected_tag))
        theirs = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        idx = torch.randint(0, 512, (2, 32))
        with torch.no_grad():
            torch.testing.assert_close(theirs(idx).logits, ours.eval()(idx)[0], rtol=0, atol=1e-5)
    # An existing directory is left alone; a tag that is not there is named.
    assert cli_main(["export", "--checkpoint", str(finished), "--out", str(tmp_path / "hf-None")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli_main(["export", "--checkpoint", str(finished), "--out", str(tmp_path / "x"), "--tag",
                     "step_00000005"]) == 2
    assert "step_00000005: not a complete checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
