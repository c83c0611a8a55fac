"""The launchers' contact points with code that is not ours: Ray Train's private torch-backend API (used in one
function, `training.launch.ray_process_group_api`), which a Ray upgrade may change without notice."""

from __future__ import annotations

import inspect

import pytest

from training import launch


def test_rays_private_process_group_api_is_as_the_file_rendezvous_uses_it():
    backend, set_env_vars, setup_process_group = launch.ray_process_group_api()
    assert list(inspect.signature(backend.on_start).parameters) == ["self", "worker_group", "backend_config"]
    assert list(inspect.signature(set_env_vars).parameters) == []
    assert {"backend", "world_rank", "world_size", "init_method", "timeout_s"} <= set(
        inspect.signature(setup_process_group).parameters)
    from ray.train.v2._internal.execution.worker_group.execution_group import ExecutionGroup

    for method in ("execute", "execute_single_async", "__len__"):  # what on_start calls on the worker group
        assert callable(getattr(ExecutionGroup, method, None)), method
    config = launch._file_store_torch_config("/tmp/store", "gloo")
    assert issubclass(config.backend_cls, backend) and config.backend == "gloo"


@pytest.mark.parametrize("change", ["removed", "resigned"])
def test_a_ray_that_changed_it_fails_loudly_naming_its_version(change, monkeypatch):
    import ray
    import ray.train.torch.config as ray_torch_config

    if change == "removed":
        monkeypatch.delattr(ray_torch_config, "_setup_torch_process_group")
    else:
        monkeypatch.setattr(ray_torch_config, "_setup_torch_process_group", lambda backend, rank, size: None)
    with pytest.raises(launch.LaunchError, match=rf"Ray {ray.__version__}: .*_setup_torch_process_group"):
        launch.ray_process_group_api()


@pytest.mark.slow
def test_the_runs_config_json_is_written_once_with_the_architecture_of_its_init_from_model(tmp_path, monkeypatch):
    import json

    import torch

    from tests.helpers import run_tiny, write_token_dataset
    from training import storage
    from training.hf import export_hf
    from training.model import GPT, GPTConfig

    torch.manual_seed(0)
    start = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=32, vocab_size=512, pad_vocab_to=64))
    export_hf(start, start.config, tmp_path / "hf")
    written = []
    write_text = storage.RunStore.write_text
    monkeypatch.setattr(storage.RunStore, "write_text",
                        lambda self, name, text: (written.append(name), write_text(self, name, text))[1])
    out = tmp_path / "run"
    run_tiny(write_token_dataset(tmp_path / "tokens"), out, max_steps=2, **{
        "model.init_from": str(tmp_path / "hf"), "checkpoint.every": 2, "eval.every": 0})
    assert written.count("config.json") == 1
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["n_layer"], model["n_head"], model["n_embd"]) == (3, 2, 32)  # the init_from model's, not tiny's
    assert not list(out.glob(".torchrun-*"))
