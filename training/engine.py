"""The distributed side of training: join the process group whichever launcher started us, pick the device, and
wrap the model in a DeepSpeed engine (ZeRO stage, offload, precision, AdamW with weight-decay groups, schedule)
from the typed config.

Process groups: under Ray Train the group already exists (training/launch.py made it); under torchrun or the
deepspeed launcher the environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`) says where to meet; a lone process
meets itself through a FileStore, which opens no port.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

from training.config import TrainConfig


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def started_as_rank() -> bool:
    """Whether torchrun or the deepspeed launcher started this process as one rank: they set RANK, WORLD_SIZE and
    MASTER_ADDR. (The local launcher sets RANK and WORLD_SIZE for DeepSpeed but no MASTER_ADDR, and a process it
    starts inherits them: that child is not a rank.)"""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def choose_accelerator(use_gpu: bool) -> None:
    """Before DeepSpeed is first imported: the CPU as its accelerator unless `use_gpu`. Left to itself, DeepSpeed
    looks for a GPU and, finding none, warns that it "was unable to detect" one before it takes the CPU."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def init_distributed(cfg: TrainConfig) -> Dist:
    use_gpu = cfg.launch.use_gpu and torch.cuda.is_available()
    if cfg.launch.use_gpu and not use_gpu:
        raise RuntimeError("launch.use_gpu is set but torch sees no CUDA device")
    choose_accelerator(use_gpu)
    import deepspeed

    backend = "nccl" if use_gpu else "gloo"
    from training.ops import prepare_shm_op, remove_stale_locks

    if not use_gpu:  # DeepSpeed compiles its CPU comm op at init_distributed, the first time (training/ops.py)
        prepare_shm_op()
    else:  # its other ops (cpu_adam for offload, fused_adam) are built at engine start
        remove_stale_locks()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    elif started_as_rank():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, init_method="env://")
    else:
        store = tempfile.mkdtemp(prefix="webtext-pg-")
        atexit.register(shutil.rmtree, store, ignore_errors=True)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")  # DeepSpeed reads them
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   init_method=f"file://{store}/store", rank=0, world_size=1)
    if use_gpu:
        torch.cuda.set_device(local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (the fp32 runs) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
        torch.set_num_threads(cfg.launch.threads_per_worker or max(1, (os.cpu_count() or 1) // local_world))
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear weights, embeddings); none on biases and LayerNorm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, cfg: TrainConfig, world_size: int):
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, cfg.optim.weight_decay),
        config=cfg.deepspeed_config(world_size),
        lr_scheduler=lambda optimizer: LambdaLR(optimizer, lambda step: cfg.lr_at(step) / cfg.optim.lr),
        dist_init_required=False,
    )
    return engine


def local_grad_norm(engine) -> float | None:
    """Without ZeRO, DeepSpeed keeps no norm: measure the (already all-reduced) gradients before the step."""
    if engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled() or engine.fp16_enabled():
        return None
    norms = [p.grad.detach().norm() for p in engine.module.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else None


def grad_norm(engine, measured: float | None = None) -> float | None:
    """The global gradient norm of the last step (before clipping), as DeepSpeed measured it for clipping."""
    if measured is not None:
        return measured
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if torch.is_tensor(norm) else norm)
