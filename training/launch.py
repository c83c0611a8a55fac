"""Launchers: run `training.loop.train_worker` on N ranks through Ray Train (default), torchrun, or in this
process alone. The function and the config are the same whichever is used.

Ray Train: embedded Ray (loopback only) or the cluster at `launch.address` / `RAY_ADDRESS`; CPU workers use gloo,
GPU workers NCCL. On one machine the process group meets through a FileStore under the run directory, so no
port is opened (torch's TCPStore, which Ray Train and torchrun use by default, listens on every interface), and
gloo/NCCL connect the ranks over `lo`; on a cluster it is Ray's usual TCP rendezvous. Checkpoints are written by
the ranks into `out_dir`: on a cluster a URI (s3://...) that every node reaches, which the ranks reach through
node-local staging directories (training/storage.py), or a filesystem mounted at the same path on every node.

torchrun: `python -m torch.distributed.run --standalone` on this machine (its rendezvous store is a TCPStore; run
it in a loopback-only network namespace or behind a firewall), each rank entering through `training.rank`. Under
torchrun or `deepspeed` started by the user, `jobs.pretrain` sees RANK/WORLD_SIZE and runs the worker directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import WebtextError
from training.config import TrainConfig
from training.loop import train_worker
from training.storage import RunStore


# On one machine, gloo's and NCCL's own connections between ranks go over loopback too (gloo otherwise binds
# the address its host name resolves to).
LOOPBACK_SOCKETS = {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}


class LaunchError(WebtextError, RuntimeError):
    """The training run failed; the message carries the worker's error."""

    hint = ("the ranks' own output is in the log (the terminal with --verbose); rerunning the same command resumes "
            "from the newest complete checkpoint")


def launch(cfg: TrainConfig) -> dict:
    cfg.check_batch()  # a batch that does not add up fails here, before any process starts
    store = RunStore(cfg.out_dir, cfg.staging_dir, role="driver")
    store.delete("summary.json")  # the run's config.json is written by its rank 0 (training/loop.py)
    if cfg.launch.launcher == "ray":
        return launch_ray(cfg, store)
    if cfg.launch.launcher == "torchrun":
        return launch_torchrun(cfg, store)
    if cfg.launch.num_workers != 1:
        raise LaunchError("launch.launcher=local runs one process; use ray or torchrun for num_workers > 1")
    return train_worker(cfg.model_dump(mode="json"))


def _ray_train_fn(config: dict) -> None:
    train_worker(config)


def ray_process_group_api():
    """The private parts of Ray Train's torch backend that the FileStore rendezvous builds on, in one place:
    (`_TorchBackend`, `_set_torch_distributed_env_vars`, `_setup_torch_process_group`). A Ray release that moves,
    renames or re-signs them fails here, with the Ray version named (tests/training/test_launch.py checks it)."""
    import inspect

    import ray

    try:
        from ray.train.torch.config import (
            _set_torch_distributed_env_vars,
            _setup_torch_process_group,
            _TorchBackend,
        )
    except ImportError as err:
        raise LaunchError(f"Ray {ray.__version__}: {str(err).split(' (')[0]}; launch.rendezvous=file needs "
                          "updating for this Ray (or use launch.rendezvous=tcp)") from None
    params = set(inspect.signature(_setup_torch_process_group).parameters)
    missing = {"backend", "world_rank", "world_size", "init_method", "timeout_s"} - params
    if missing or not callable(getattr(_TorchBackend, "on_start", None)):
        raise LaunchError(f"Ray {ray.__version__}: _setup_torch_process_group takes {sorted(params)}, not "
                          f"{sorted(missing)}; launch.rendezvous=file needs updating for this Ray (or use launch.rendezvous=tcp)")
    return _TorchBackend, _set_torch_distributed_env_vars, _setup_torch_process_group


def _file_store_torch_config(store_path: str, backend: str):
    """A Ray Train TorchConfig whose process group meets through a FileStore: nothing listens on a port.
    Ray's own backend is kept for everything else (environment variables, shutdown)."""
    import ray
    from ray.train.torch.config import TorchConfig

    torch_backend, set_env_vars, setup_process_group = ray_process_group_api()

    class FileStoreBackend(torch_backend):
        def on_start(self, worker_group, backend_config):
            worker_group.execute(set_env_vars)
            worker_group.execute(os.environ.update, LOOPBACK_SOCKETS)
            world = len(worker_group)
            ray.get([
                worker_group.execute_single_async(
                    rank, setup_process_group, backend=backend, world_rank=rank, world_size=world,
                    init_method=f"file://{store_path}", timeout_s=backend_config.timeout_s)
                for rank in range(world)
            ])

    @dataclass
    class FileStoreTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return FileStoreBackend

    return FileStoreTorchConfig(backend=backend)


def launch_ray(cfg: TrainConfig, run: RunStore) -> dict:
    from pipeline.executor import connect_ray

    address = cfg.launch.address or os.environ.get("RAY_ADDRESS")
    connect_ray(address=address)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    backend = "nccl" if cfg.launch.use_gpu else "gloo"
    out_dir = run.shared_location
    # Ray Train keeps its own run state beside ours: in out_dir, through the same filesystem when it is a URI.
    ray_storage = (run.remote.path("ray"), run.remote.fs) if run.remote is not None else (f"{out_dir}/ray", None)
    rendezvous = cfg.launch.rendezvous
    if rendezvous == "auto":
        rendezvous = "tcp" if address else "file"
    if rendezvous == "file":  # one machine: the store file sits on its disk (the driver's staging for a URI)
        run.local.mkdir(parents=True, exist_ok=True)
        store = run.local.resolve() / f".pg-{uuid.uuid4().hex[:12]}"
        torch_config = _file_store_torch_config(str(store), backend)
    else:
        torch_config = TorchConfig(backend=backend)
    config = cfg.model_dump(mode="json")
    config["out_dir"] = out_dir  # workers may start in another working directory
    if address is None:
        # Ray Train's preemption watcher waits for the drain of a cluster's node, which one machine never has
        # (read by its controller, to which Ray Train passes this variable).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        TorchTrainer = _without_placement_group_cleaner(TorchTrainer)  # noqa: N806
    trainer = TorchTrainer(
        _ray_train_fn,
        train_loop_config=config,
        torch_config=torch_config,
        scaling_config=ScalingConfig(num_workers=cfg.launch.num_workers, use_gpu=cfg.launch.use_gpu,
                                     resources_per_worker={"CPU": cfg.launch.cpus_per_worker}),
        run_config=RunConfig(name=f"pretrain-{uuid.uuid4().hex[:8]}", storage_path=ray_storage[0],
                             storage_filesystem=ray_storage[1], failure_config=FailureConfig(max_failures=0)),
    )
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps the worker's exception; keep its message, drop Ray's traceback
        if (own := _webtext_error(err)) is not None:  # a rank's own error says best what to do (its hint)
            raise own from None
        raise LaunchError(f"training failed: {_root_message(err)}") from None
    finally:
        if rendezvous == "file":
            store.unlink(missing_ok=True)
    return read_summary(out_dir)


def _without_placement_group_cleaner(trainer_cls):
    """`trainer_cls` less Ray Train's PlacementGroupCleaner, for the embedded Ray. The cleaner is a detached actor
    that asks the State API every second whether the run's controller lives, to free its placement group if it
    died; the State API needs Ray's dashboard, which the embedded Ray does not run, so every question fails (a
    warning each second, or a thread dying with "Found multiple active Ray instances" when other Rays run on the
    machine), and the embedded Ray's placement groups end with the driver anyway."""

    class Trainer(trainer_cls):
        def _create_default_callbacks(self):
            return [callback for callback in super()._create_default_callbacks()
                    if type(callback).__name__ != "PlacementGroupCleanerCallback"]

    if not callable(getattr(trainer_cls, "_create_default_callbacks", None)):  # a Ray without it: as it is
        return trainer_cls
    return Trainer


def _webtext_error(err: BaseException) -> WebtextError | None:
    """The WebtextError that a rank raised, under Ray Train's wrappers, if that is what failed the run."""
    from pipeline.executor import unwrap

    seen: set[int] = set()
    todo = [err]
    while todo:
        current = unwrap(todo.pop())
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, WebtextError):
            return current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [e for e in getattr(current, "worker_failures", {}).values() if isinstance(e, BaseException)]
    return None


def _root_message(err: BaseException) -> str:
    seen = err
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return next((line for line in reversed(text) if line.strip() and not line.startswith(" ")), repr(seen))


def launch_torchrun(cfg: TrainConfig, run: RunStore) -> dict:
    out_dir = run.shared_location
    # The ranks' config, in the run directory (for a URI out_dir, the driver's staging directory) while they run.
    run.local.mkdir(parents=True, exist_ok=True)
    config_file = run.local.resolve() / f".torchrun-{uuid.uuid4().hex[:12]}.json"
    config = cfg.model_dump(mode="json")
    config["out_dir"] = out_dir
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    env = {**os.environ, **LOOPBACK_SOCKETS}
    if not cfg.launch.use_gpu and cfg.launch.threads_per_worker:
        env["OMP_NUM_THREADS"] = str(cfg.launch.threads_per_worker)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={cfg.launch.num_workers}", "-m", "training.rank", str(config_file)]
    try:
        proc = subprocess.run(cmd, env=env)
    finally:
        config_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise LaunchError(f"torchrun exited with code {proc.returncode}")
    return read_summary(out_dir)


def read_summary(out_dir: str | Path) -> dict:
    """What rank 0 wrote at the end of the run (training/loop.py); out_dir a path or URI."""
    run = RunStore(str(out_dir))
    return json.loads(run.read_text("summary.json")) if run.exists("summary.json") else {}
