"""The typed training config: batch arithmetic, unknown keys, the DeepSpeed JSON it generates, the schedule."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main as cli_main
from pipeline.config import ConfigError, load_config
from tests.helpers import CONFIGS
from training.config import BatchConfig, TrainConfig


def test_batch_arithmetic_micro_times_accumulation_times_world_is_global():
    assert BatchConfig(micro_batch_size=4, global_batch_size=32).resolve(2) == (4, 4, 32)
    assert BatchConfig(micro_batch_size=4, grad_accum_steps=3).resolve(2) == (4, 3, 24)
    assert BatchConfig(micro_batch_size=4).resolve(8) == (4, 1, 32)
    assert BatchConfig(micro_batch_size=4, grad_accum_steps=4, global_batch_size=32).resolve(2) == (4, 4, 32)
    with pytest.raises(ConfigError, match="global_batch_size 30 is not a multiple of .* 8"):
        BatchConfig(micro_batch_size=4, global_batch_size=30).resolve(2)
    with pytest.raises(ConfigError, match="grad_accum_steps 3 x world size 2 = 24, not global_batch_size 32"):
        BatchConfig(micro_batch_size=4, grad_accum_steps=3, global_batch_size=32).resolve(2)


def test_unknown_and_invalid_keys_are_errors_naming_the_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("max_steps: 10\nzero:\n  stage: 2\n  offload_optimiser: true\n")
    with pytest.raises(ConfigError, match=r"unknown key 'zero.offload_optimiser'"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match=r"key 'zero.stage'"):
        load_config(TrainConfig, None, ["zero.stage=4"])
    with pytest.raises(ConfigError, match=r"offload_params needs ZeRO stage 3"):
        load_config(TrainConfig, None, ["zero.stage=2", "zero.offload_params=true"])
    with pytest.raises(ConfigError, match=r"precision fp16 needs GPUs"):
        load_config(TrainConfig, None, ["precision=fp16"])
    with pytest.raises(ConfigError, match=r"seq_len 2048 exceeds model.block_size 1024"):
        load_config(TrainConfig, None, ["batch.seq_len=2048"])


def test_the_loader_is_a_typed_choice_and_runs_saved_with_a_class_path_still_load():
    assert TrainConfig().data.loader == "tokens"
    assert load_config(TrainConfig, None, ["data.loader=examples"]).data.loader == "examples"
    with pytest.raises(ConfigError, match=r"key 'data.loader'"):
        load_config(TrainConfig, None, ["data.loader=training.data:Other"])
    for legacy, choice in (("training.data:TokenWindows", "tokens"),
                           ("training.finetune_data:ExampleBatches", "examples")):  # an older run's config.json
        assert TrainConfig.model_validate({"data": {"loader": legacy}}).data.loader == choice


def test_config_errors_name_the_key_first_on_one_short_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("zero:\n  offload_optimiser: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, path)
    assert str(err.value) == f"unknown key 'zero.offload_optimiser' (in {path})"
    with pytest.raises(ConfigError) as err:  # a check across keys does not dump the whole config
        load_config(TrainConfig, None, ["batch.seq_len=4096"])
    message = str(err.value)
    assert message.startswith("batch.seq_len 4096 exceeds model.block_size") and "\n" not in message
    assert len(message) < 160, message
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, None, ["optim.lr=" + "x" * 100])
    assert str(err.value).startswith("key 'optim.lr': ") and len(str(err.value)) < 200


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_deepspeed_json_follows_the_config(stage, precision):
    cfg = load_config(TrainConfig, None, [f"zero.stage={stage}", f"precision={precision}", "launch.use_gpu=true",
                                          "batch.micro_batch_size=2",
                                          "batch.global_batch_size=16", "optim.grad_clip=0.5", "optim.lr=1e-3"])
    ds = cfg.deepspeed_config(world_size=4)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 2, 2)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["bf16"]["enabled"] == (precision == "bf16") and ds["fp16"]["enabled"] == (precision == "fp16")
    assert ds["gradient_clipping"] == 0.5
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 1e-3
    assert "torch_adam" not in ds["optimizer"]["params"]  # GPUs: DeepSpeed's fused Adam
    json.dumps(ds)
    if precision != "fp16":
        cpu = load_config(TrainConfig, None, [f"zero.stage={stage}", f"precision={precision}"])
        assert cpu.deepspeed_config(1)["optimizer"]["params"]["torch_adam"] is True  # CPU: no fused_adam build


def test_offload_sections():
    cfg = load_config(TrainConfig, None, ["zero.stage=3", "zero.offload_optimizer=true", "zero.offload_params=true"])
    zero = cfg.deepspeed_config(1)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert "offload_param" not in load_config(TrainConfig, None, ["zero.stage=2"]).deepspeed_config(1)["zero_optimization"]


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    cfg = load_config(TrainConfig, None, ["max_steps=110", "optim.warmup_steps=10", "optim.lr=1e-3",
                                          "optim.min_lr_ratio=0.1"])
    assert cfg.lr_at(0) == pytest.approx(1e-4)
    assert cfg.lr_at(9) == pytest.approx(1e-3)
    assert cfg.lr_at(60) == pytest.approx(0.55e-3)
    assert cfg.lr_at(110) == pytest.approx(1e-4)
    lrs = [cfg.lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_a_batch_that_does_not_add_up_fails_the_dry_run(capsys):
    assert cli_main(["pretrain", "--config", str(CONFIGS / "pretrain_tiny.yaml"), "--set", "batch.global_batch_size=20",
                     "--dry-run"]) == 2
    assert "global_batch_size 20" in capsys.readouterr().err


def test_pretrain_help_says_rerunning_resumes(capsys):
    with pytest.raises(SystemExit):
        cli_main(["pretrain", "--help"])
    assert "Rerunning the same command resumes" in " ".join(capsys.readouterr().out.split())
