"""Checkpoints that resume exactly: DeepSpeed's sharded model/optimizer/schedule state plus, per rank, the data
cursor, every RNG state and the loop's counters; the newest K kept; a consolidated fp32 export on request.

Layout under `<out_dir>/checkpoints/`: one directory per step (`step_00000100/`) holding DeepSpeed's files,
`trainer_rank<R>.pt` for each rank and, written last after a barrier, `COMPLETE`: the checkpoint's manifest, the
size and sha256 of every other file in it. A run killed mid-save leaves a directory without `COMPLETE`, which
resume ignores; a complete checkpoint whose files no longer match its manifest (a truncated copy, a bad disk) is
set aside by resume, which falls back to the previous one (`verify`, training/loop.py). With `out_dir` a URI the
same layout is saved in each machine's staging directory and uploaded from there, `COMPLETE` last (`save`,
training/storage.py).

Loading never unpickles arbitrary objects: our files and DeepSpeed's are read with `torch.load(weights_only=True)`
(DeepSpeed's own calls are redirected to it for the duration, with its few plain classes allow-listed), and fp32
exports are safetensors. A file that cannot be read is a `CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from pipeline.errors import WebtextError
from pipeline.storage import sha256_file
from training.storage import COMPLETE, REJECTED, RunStore

FP32_EXPORT = "model_fp32.safetensors"


class CheckpointError(WebtextError, ValueError):
    """A checkpoint file that cannot be used; the message names it and says why, on one line."""

    hint = ("give another checkpoint (<run>/checkpoints/step_N), or start the run afresh with --set "
            "checkpoint.resume=false (its checkpoints are set aside, not deleted)")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _deepspeed_safe_globals() -> list:
    """The plain (non-tensor) classes DeepSpeed puts in its checkpoint files."""
    from training.engine import choose_accelerator

    choose_accelerator(torch.cuda.is_available())  # a reader may be the first to import DeepSpeed
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address, set]


@contextlib.contextmanager
def weights_only_loading():
    """Within the block, every `torch.load` (DeepSpeed's included) reads with weights_only=True, and a file that
    cannot be read so is a CheckpointError naming it (never torch's advice to retry with weights_only=False)."""
    original = torch.load

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return original(f, *args, **kwargs)
        except pickle.UnpicklingError as err:
            raise CheckpointError(f"{f}: refused to load: {_refusal_reason(err)}") from None
        except (RuntimeError, OSError, EOFError, ValueError) as err:
            raise CheckpointError(f"{f}: unreadable ({_first_line(err)}); the file is damaged or cut short") from None

    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        torch.load = load
        try:
            yield
        finally:
            torch.load = original


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler objected to (e.g. "unsupported GLOBAL posix.system"), without its advice
    to load the file with weights_only=False. Its message is paragraphs: that advice, the objection, a docs link."""
    paragraphs = [p.strip() for p in str(err).split("\n\n") if p.strip()]
    for paragraph in paragraphs[1:]:
        detail = paragraph.splitlines()[0].replace("WeightsUnpickler error:", "").strip()
        detail = detail.split(" Please use")[0].split(" was not an allowed global")[0].rstrip(".")
        if detail and "weights_only" not in detail and not detail.startswith("Check the documentation"):
            return f"it holds a pickled object that is not tensors or plain data ({detail})"
    return "it holds a pickled object that is not tensors or plain data"


def file_records(directory: Path) -> dict[str, dict]:
    """Relative name -> {bytes, sha256} of every file of a checkpoint directory but its markers and hidden files."""
    records = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name not in (COMPLETE, REJECTED) and not path.name.startswith("."):
            records[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def verify(path: Path) -> str | None:
    """None if every file the checkpoint's manifest (its COMPLETE) lists is there with its recorded size and
    sha256, else one line naming the first file that is not. A checkpoint saved before manifests existed has
    nothing to check against and passes."""
    try:
        manifest = json.loads((path / COMPLETE).read_text())
        files = manifest.get("files", {})
        if not all(isinstance(r, dict) and {"bytes", "sha256"} <= r.keys() for r in files.values()):
            raise ValueError("a file's record is not {bytes, sha256}")
    except (OSError, ValueError, AttributeError) as err:
        detail = "not a JSON object with files" if isinstance(err, AttributeError) else _first_line(err)
        return f"{path / COMPLETE}: unreadable manifest ({detail})"
    for name, record in files.items():
        file = path / name
        if not file.is_file():
            return f"{file}: missing (the checkpoint's manifest lists it)"
        size = file.stat().st_size
        if size != record["bytes"]:
            return f"{file}: {size} bytes, {record['bytes']} when it was saved"
        if sha256_file(file) != record["sha256"]:
            return f"{file}: its sha256 differs from the one recorded when it was saved"
    return None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, (list, tuple)) else x


def save(engine, store: RunStore, step: int, trainer_state: dict, keep_last: int, export_fp32: bool = False) -> Path:
    """Collective: every rank calls it. Returns the checkpoint directory (in `store.ckpt_root`).

    For a remote run the ranks save into their machine's staging directory; rank 0 deletes any remote copy of the tag
    (left by a killed run), then each staging directory's content is hashed and uploaded once, by the first of its
    ranks (locally rank 0 hashes the directory every rank wrote into). Rank 0 gathers the hashes, writes COMPLETE
    with them (uploaded last) and prunes old checkpoints; a staged copy goes once uploaded."""
    tag = tag_for(step)
    rank = dist.get_rank()
    engine.save_checkpoint(str(store.ckpt_root), tag=tag)
    path = store.ckpt_root / tag
    path.mkdir(parents=True, exist_ok=True)  # on a machine whose ranks DeepSpeed gave nothing to write
    torch.save({**trainer_state, "rng": rng_state(), "world_size": dist.get_world_size()},
               path / f"trainer_rank{rank}.pt")
    if export_fp32:
        save_fp32(engine, path / FP32_EXPORT)
    if rank == 0:
        store.delete_remote_checkpoint(tag)
    dist.barrier()
    if store.remote is not None:
        records = store.push_checkpoint_files(tag, file_records)
    else:
        records = file_records(path) if rank == 0 else {}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, records)  # also the barrier: every rank's files are written and uploaded
    if rank == 0:
        files = {name: record for part in gathered for name, record in part.items()}
        store.mark_complete(tag, json.dumps({"step": step, "files": files}, indent=1) + "\n")
        store.prune(keep_last)
    dist.barrier()
    store.drop_staged(tag)
    return path


def load(engine, ckpt_root: Path, tag: str) -> dict:
    """Collective: restore engine (model, optimizer, schedule) and return this rank's trainer state."""
    rank, world = dist.get_rank(), dist.get_world_size()
    path = ckpt_root / tag
    trainer_file = path / f"trainer_rank{rank}.pt"
    if not trainer_file.is_file():
        raise CheckpointError(f"{trainer_file}: checkpoint {tag} has no state for rank {rank} "
                              f"(was it written by a run with another number of workers?)")
    with weights_only_loading():
        state = torch.load(trainer_file, map_location="cpu")
        if state["world_size"] != world:
            raise CheckpointError(f"{path}: written by {state['world_size']} workers, resuming with {world}; "
                                  "resume with the same launch.num_workers")
        load_path, _ = engine.load_checkpoint(str(ckpt_root), tag=tag, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
    if load_path is None:
        raise FileNotFoundError(f"{path}: DeepSpeed could not load this checkpoint")
    set_rng_state(state["rng"])
    return state


def full_fp32_state_dict(engine) -> dict[str, torch.Tensor]:
    """Collective: the full fp32 parameters (ZeRO's master copy where there is one), on every rank."""
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param) if engine.zero_optimization_stage() > 0 else None
        if full is None:
            full = param.detach()
        state[name] = full.detach().to("cpu", torch.float32).clone()
    return state


def save_fp32(engine, path: Path) -> None:
    """Collective: rank 0 writes the consolidated fp32 weights as safetensors (a tied head written once: as the
    embedding)."""
    state = full_fp32_state_dict(engine)
    if dist.get_rank() == 0:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def load_fp32(path: Path) -> dict[str, torch.Tensor]:
    """A consolidated export, with a tied head restored: ready for `GPT.load_state_dict`."""
    state = load_file(str(path))
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    return state


def consolidate(ckpt_root: Path, tag: str) -> dict[str, torch.Tensor]:
    """fp32 weights from a DeepSpeed checkpoint directory, without processes: the export if the run wrote one,
    else DeepSpeed's zero_to_fp32 (stages 1-3) or the stage-0 model file, read with weights_only=True. A checkpoint
    whose files do not match its manifest is a CheckpointError naming the file."""
    path = ckpt_root / tag
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(problem)
    if (path / FP32_EXPORT).is_file():
        return load_fp32(path / FP32_EXPORT)
    with weights_only_loading():
        if list(path.glob("*optim_states.pt")) and list(path.glob("zero_pp_rank_*")):
            from training.engine import choose_accelerator

            choose_accelerator(torch.cuda.is_available())
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt_root), tag=tag))
        else:
            state = torch.load(path / "mp_rank_00_model_states.pt", map_location="cpu")["module"]
    state = {k: v.float() for k, v in state.items()}
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    return state
