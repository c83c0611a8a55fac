"""Training runs end to end on 2 CPU ranks: every ZeRO stage against stage 0, exact resume after a real kill,
Ray Train and torchrun giving the same run, checkpoints, evaluation, metrics, exports and NaN handling.

Tolerances: a ZeRO stage's losses follow stage 0's within 1e-5 relative (the stages reduce gradients in
different orders, so fp32 sums differ in the last bits); a resumed run equals the uninterrupted one bit for bit
(fp32 on CPU), as do the two launchers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs.cli import main as cli_main
from tests.helpers import kill_at_step, run_tiny as run, tiny_config, write_token_dataset
from training import checkpoint
from training.config import TrainConfig
from training.hf import import_hf
from training.loop import TrainingDiverged
from training.metrics import losses_by_step, read_metrics
from training.model import GPT
from training.storage import COMPLETE, complete_tags

STEPS, KILL_AT = 8, 5  # checkpoints every 4 steps: the killed run resumes from step 4 and redoes step 5
TWO_RANKS = {"launch.num_workers": 2, "batch.micro_batch_size": 2, "batch.global_batch_size": 8,
             "batch.grad_accum_steps": None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_token_dataset(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def stage0_losses(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage0")
    run(data, out, **TWO_RANKS, **{"launch.launcher": "torchrun", "zero.stage": 0})
    return losses_by_step(out / "metrics.jsonl")


def zero_opts(stage: int) -> dict:
    return {**TWO_RANKS, "launch.launcher": "torchrun", "zero.stage": stage, "checkpoint.export_fp32": True}


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """The uninterrupted torchrun run of a ZeRO stage, made once: the stage's test and, for stage 2, the launchers
    test read the same run (which checks only its losses)."""
    runs = {}

    def of_stage(stage: int) -> Path:
        if stage not in runs:
            runs[stage] = tmp_path_factory.mktemp(f"zero{stage}") / "full"
            run(data, runs[stage], **zero_opts(stage))
        return runs[stage]

    return of_stage


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stage_follows_stage0_and_resumes_exactly_after_a_kill(stage, data, stage0_losses, full_run, tmp_path,
                                                                    monkeypatch, capsys):
    opts = zero_opts(stage)
    full_dir = full_run(stage)
    full = losses_by_step(full_dir / "metrics.jsonl")
    assert sorted(full) == list(range(1, STEPS + 1))
    for step, loss in stage0_losses.items():
        assert full[step] == pytest.approx(loss, rel=1e-5), f"stage {stage} vs stage 0 at step {step}"
    assert full[STEPS] < full[1] - 0.3

    with monkeypatch.context() as m:
        kill_at_step(m, KILL_AT)
        with pytest.raises(Exception, match="torchrun exited"):
            run(data, tmp_path / "killed", **opts)
    assert complete_tags(tmp_path / "killed" / "checkpoints") == ["step_00000004"]
    summary = run(data, tmp_path / "killed", **opts)
    assert summary["resumed_from"] == "step_00000004" and summary["step"] == STEPS
    assert losses_by_step(tmp_path / "killed" / "metrics.jsonl") == full  # bitwise
    # The resumed run dropped what the killed one logged after its checkpoint: one line per step, no repeats.
    lines = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, STEPS + 1))
    val = losses_by_step(tmp_path / "killed" / "metrics.jsonl", "val_loss")
    assert val == losses_by_step(full_dir / "metrics.jsonl", "val_loss")

    # The consolidated fp32 export (gathered from ZeRO's master weights in the run) equals DeepSpeed's offline
    # consolidation of the sharded checkpoint, and evaluates to the run's own final validation loss.
    ckpt_root = full_dir / "checkpoints"
    exported = checkpoint.load_fp32(ckpt_root / "step_00000008" / checkpoint.FP32_EXPORT)
    (ckpt_root / "step_00000008" / checkpoint.FP32_EXPORT).unlink()
    manifest = json.loads((ckpt_root / "step_00000008" / COMPLETE).read_text())
    del manifest["files"][checkpoint.FP32_EXPORT]  # as if the run had written none
    (ckpt_root / "step_00000008" / COMPLETE).write_text(json.dumps(manifest))
    offline = checkpoint.consolidate(ckpt_root, "step_00000008")
    assert exported.keys() == offline.keys()
    for name in exported:
        assert torch.equal(exported[name], offline[name]), name
    if stage == 3:  # `webtext eval` on the sharded ZeRO-3 checkpoint, in one process without DeepSpeed
        capsys.readouterr()
        assert cli_main(["eval", "--checkpoint", str(full_dir)]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # DeepSpeed logs to stdout first
        assert result["val_loss"] == pytest.approx(val[STEPS], rel=1e-5)
        # ... and `webtext export` of it loads in transformers with the consolidated weights' logits.
        transformers = pytest.importorskip("transformers")
        assert cli_main(["export", "--checkpoint", str(full_dir), "--out", str(tmp_path / "hf")]) == 0
        ours = GPT(TrainConfig.model_validate(tiny_config(data, tmp_path)).model.gpt_config())
        ours.load_state_dict(offline)
        idx = torch.randint(0, 512, (2, 32))
        with torch.no_grad():
            theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()(idx).logits
            torch.testing.assert_close(theirs, ours.eval()(idx)[0], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_mlm_eval_of_a_two_rank_run_gives_the_val_loss_it_logged_and_torchrun_prints_one_summary(data, tmp_path,
                                                                                                capfd):
    out = tmp_path / "mlm"
    config = tmp_path / "mlm.json"  # JSON is YAML
    config.write_text(json.dumps(tiny_config(data, out, **TWO_RANKS, **{
        "launch.launcher": "torchrun", "model.objective": "mlm", "max_steps": 2, "optim.warmup_steps": 1,
        "checkpoint.every": 0, "eval.every": 0, "eval.batches": 3})))
    assert cli_main(["pretrain", "--config", str(config)]) == 0
    printed = capfd.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("{") and '"resumed_from"' in line]) == 1
    logged = losses_by_step(out / "metrics.jsonl", "val_loss")[2]
    # Masks are drawn per validation batch, whichever rank read it: one process reading all six gets the same.
    assert cli_main(["eval", "--checkpoint", str(out)]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["val_loss"] == pytest.approx(logged, rel=1e-6)


@pytest.mark.slow
def test_a_run_started_by_a_users_own_torchrun_records_the_world_it_ran_in(data, tmp_path, capfd):
    """`torchrun --nproc_per_node 2 -m jobs.pretrain` with a config that says one worker: the run's config.json
    says two, so `webtext eval` reads both ranks' validation batches and gives the val_loss the run logged."""
    out = tmp_path / "own"
    config = tmp_path / "own.json"  # JSON is YAML
    config.write_text(json.dumps(tiny_config(data, out, **{
        **TWO_RANKS, "launch.num_workers": 1, "batch.global_batch_size": 4, "launch.launcher": "torchrun",
        "model.objective": "mlm", "max_steps": 2, "optim.warmup_steps": 1, "checkpoint.every": 0,
        "eval.every": 0, "eval.batches": 3})))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                    "jobs.pretrain", "--config", str(config)], check=True, timeout=600)
    assert json.loads((out / "config.json").read_text())["launch"]["num_workers"] == 2
    logged = losses_by_step(out / "metrics.jsonl", "val_loss")[2]
    capfd.readouterr()
    assert cli_main(["eval", "--checkpoint", str(out)]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["val_loss"] == pytest.approx(logged, rel=1e-6)


@pytest.mark.slow
def test_ray_train_torchrun_and_deepspeed_launchers_run_the_same_training(data, ray_session, full_run, tmp_path):
    opts = {**TWO_RANKS, "zero.stage": 2, "launch.cpus_per_worker": 0.5}
    summary = run(data, tmp_path / "ray", **opts, **{"launch.launcher": "ray"})
    assert summary["world_size"] == 2 and summary["step"] == STEPS
    ray_losses = losses_by_step(tmp_path / "ray" / "metrics.jsonl")
    # Same function, same data, same losses up to float summation order: launchers differ in their thread pools
    # and collective paths, which moves the last bits (seen ~2e-8 relative on a loaded CI machine).
    same = pytest.approx(ray_losses, rel=1e-6)
    assert losses_by_step(full_run(2) / "metrics.jsonl") == same  # torchrun, ZeRO-2 (its fp32 export aside)
    assert not list((tmp_path / "ray").glob(".pg-*")), "the FileStore rendezvous file is removed"
    # Ray's own TCP rendezvous, the one used on a cluster, trains the same.
    run(data, tmp_path / "ray_tcp", **opts, **{"launch.launcher": "ray", "launch.rendezvous": "tcp"})
    assert losses_by_step(tmp_path / "ray_tcp" / "metrics.jsonl") == same

    # The deepspeed launcher (what `deepspeed --num_gpus 2 --module jobs.pretrain` runs); a port of our own.
    config_file = tmp_path / "ds.json"
    config_file.write_text(json.dumps(tiny_config(data, tmp_path / "deepspeed", **opts)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                        str(port), "--module", "jobs.pretrain", "--config", str(config_file)],
                       check=True, capture_output=True, timeout=300)
    finally:  # the deepspeed launcher leaves its shared-memory buffers behind (../shared/FACTS.md)
        for leftover in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"):
            leftover.unlink(missing_ok=True)
    assert losses_by_step(tmp_path / "deepspeed" / "metrics.jsonl") == same


@pytest.mark.slow
def test_one_process_run_logs_evaluates_keeps_last_k_and_exports(data, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run(data, out, **{"checkpoint.every": 2, "checkpoint.keep_last": 2, "checkpoint.export_hf": True, "log.tensorboard": True,
                                "eval.every": 4})
    assert complete_tags(out / "checkpoints") == ["step_00000006", "step_00000008"]
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    for r in train:
        assert r["lr"] > 0 and r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["tokens"] == r["step"] * 128
        assert r["mfu"] == "unknown"  # a CPU has no entry in the peak-FLOPs table
    val = {r["step"]: r for r in records if "val_loss" in r}
    assert sorted(val) == [4, 8]
    assert val[8]["val_ppl"] == pytest.approx(2.718281828 ** val[8]["val_loss"], rel=1e-6)
    assert (out / "loss.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    # `webtext eval` reads the same fixed validation windows and gets the run's own final figure.
    capsys.readouterr()
    assert cli_main(["eval", "--checkpoint", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)

    # The Hugging Face export comes back through our importer with the trained weights.
    trained = GPT(TrainConfig.model_validate(tiny_config(data, out)).model.gpt_config())
    trained.load_state_dict(checkpoint.consolidate(out / "checkpoints", "step_00000008"))
    back = import_hf(out / "hf", pad_vocab_to=64)
    idx = torch.randint(0, 512, (2, 16))
    torch.testing.assert_close(back.eval()(idx)[0], trained.eval()(idx)[0], rtol=0, atol=1e-6)

    # `webtext eval` on the export (data and windows from the run's config) gives the same figure.
    assert cli_main(["eval", "--checkpoint", str(out / "hf"), "--config", str(out / "config.json")]) == 0
    from_hf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_hf["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)

    # ... and a new run can start from it (model.init_from): its first loss is the trained model's, not ln(512).
    run(data, tmp_path / "again", **{"model.init_from": str(out / "hf"), "max_steps": 2, "optim.warmup_steps": 1})
    first = losses_by_step(tmp_path / "again" / "metrics.jsonl")[1]
    assert first < losses_by_step(out / "metrics.jsonl")[1] - 0.3


@pytest.mark.slow
def test_offload_and_activation_checkpointing_train_the_same_as_plain_zero3(data, tmp_path):
    run(data, tmp_path / "plain", **{"zero.stage": 3, "log.plot": False})
    assert not (tmp_path / "plain" / "loss.png").exists()
    run(data, tmp_path / "offload", **{"zero.stage": 3, "zero.offload_optimizer": True, "zero.offload_params": True,
                                      "model.activation_checkpointing": True})
    plain = losses_by_step(tmp_path / "plain" / "metrics.jsonl")
    offload = losses_by_step(tmp_path / "offload" / "metrics.jsonl")
    assert sorted(offload) == sorted(plain)
    for step in plain:
        assert offload[step] == pytest.approx(plain[step], rel=1e-6), step


@pytest.mark.slow
def test_non_finite_losses_skip_the_step_and_repeated_ones_stop_the_run(data, tmp_path, capsys):
    # Masked-LM with a masking rate so low that no position is masked: every loss is 0/0 = NaN.
    opts = {"model.objective": "mlm", "model.mlm_probability": 1e-9, "max_bad_steps": 3, "checkpoint.every": 1,
            "checkpoint.keep_last": 5, "data.val": []}
    # Through the CLI: a diverging run is a one-line error and exit code 2, not a traceback.
    config_file = tmp_path / "nan.json"  # JSON is YAML
    config_file.write_text(json.dumps(tiny_config(data, tmp_path / "nan", **opts)))
    assert cli_main(["pretrain", "--config", str(config_file), "--set", "max_bad_steps=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-2:]
    assert err == ["webtext: error: loss was NaN/inf in 3 consecutive steps (up to step 3); stopping",
                   f"webtext: what to do: {TrainingDiverged.hint}"]
    records = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert [(r["step"], r["loss"], r["bad_steps"]) for r in records] == [(1, "nan", 1), (2, "nan", 2), (3, "nan", 3)]
    # A skipped step changes no weight.
    ckpts = tmp_path / "nan" / "checkpoints"
    before, after = checkpoint.consolidate(ckpts, "step_00000001"), checkpoint.consolidate(ckpts, "step_00000002")
    for name in before:
        assert torch.equal(before[name], after[name]), name

    # At a rate where some micro-batches mask nothing, those steps are skipped and counted and the run goes on.
    summary = run(data, tmp_path / "some", **{**opts, "model.mlm_probability": 0.01, "batch.micro_batch_size": 1,
                                              "max_bad_steps": 100})
    records = read_metrics(tmp_path / "some" / "metrics.jsonl")
    bad = [r for r in records if r["loss"] == "nan"]
    good = [r for r in records if isinstance(r["loss"], float)]
    assert summary["step"] == STEPS and summary["bad_steps"] == len(bad) > 0 and good
