"""The training function: one per rank, the same under every launcher (Ray Train, torchrun, deepspeed, local).

`train_worker(config_dict)` builds the model and the DeepSpeed engine, resumes from the newest complete
checkpoint whose files match its manifest (a damaged one is set aside with a warning, and the one before it is
tried), drops the metrics logged after that checkpoint (a killed run's), then runs `Stepper.step`
(`grad_accum_steps` micro-batches: forward, a loss check agreed by all ranks, backward; the optimizer step) and
logs, evaluates and checkpoints on schedule. A step whose loss is NaN or inf on any
rank is skipped (no weight changes) and counted; `max_bad_steps` of them in a row stop the run with `TrainingDiverged`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import ConfigError
from pipeline.errors import WebtextError
from training import checkpoint, storage
from training.config import TrainConfig
from training.data import TokenWindows, expand_shards
from training.engine import build_engine, grad_norm, init_distributed, local_grad_norm
from training.metrics import METRICS_FILE, MetricsLog, device_name, mfu, peak_flops
from training.model import GPT, mask_for_mlm

LOG_FILES = (METRICS_FILE, "loss.png", "tensorboard")  # what rank 0 uploads at checkpoints and at the end


class TrainingDiverged(WebtextError, RuntimeError):
    """Too many consecutive steps with a non-finite loss."""

    hint = ("lower optim.lr (--set optim.lr=...), check the data, or train in bf16 / fp32 instead of fp16; rerunning "
            "resumes from the last checkpoint, --set checkpoint.resume=false starts afresh")


def make_loader(cfg: TrainConfig, split: str, rank: int, world_size: int, seed: int):
    """`data.loader`: token windows from shards (pretraining) or prepared examples (fine-tuning)."""
    from training.finetune_data import ExampleBatches

    loader = {"tokens": TokenWindows, "examples": ExampleBatches}[cfg.data.loader]
    # Remote shards are listed again at every evaluation (a listing and two small reads); their copies are reused.
    specs = cfg.data.train if split == "train" else cfg.data.val
    return loader(expand_shards(specs, split, cfg.data.cache_dir), cfg.batch.micro_batch_size,
                  cfg.batch.seq_len, rank, world_size, seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig) -> GPT:
    """The model to train. From `model.init_from` (a Hugging Face directory) its architecture is written into
    `cfg.model`, so the run's config.json rebuilds the model that was trained (`webtext eval`, export, generate)."""
    if cfg.model.init_from:
        from training import resolve

        m = cfg.model
        start = resolve.resolve(m.init_from)
        if start.kind != "hf":
            raise ConfigError(f"model.init_from: {m.init_from} is one of our checkpoints, not a Hugging Face GPT-2 "
                             "directory; export it (webtext export) or fine-tune from it (webtext finetune --from)")
        model = resolve.load_model(start, pad_vocab_to=m.pad_vocab_to, dropout=m.dropout, objective=m.objective,
                                   activation_checkpointing=m.activation_checkpointing)
        cfg.model.set_architecture(model.config)
        return model
    return GPT(cfg.model.gpt_config())


def mlm_generator(seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    # Derived from the position in the run, not carried state: resume masks exactly as an uninterrupted run.
    return torch.Generator().manual_seed(hash((seed, step, rank, micro)) % 2**63)


def prepare_batch(cfg: TrainConfig, model_cfg, x, y, seed: int, step: int, rank: int, micro: int):
    if cfg.model.objective == "mlm":
        return mask_for_mlm(x, model_cfg, mlm_generator(seed, step, rank, micro), cfg.model.mlm_probability)
    return x, y


def validation_batches(cfg: TrainConfig, model_cfg, rank: int, world_size: int, batches: int):
    """The fixed validation set as rank `rank` of `world_size` sees it: `batches` (x, y) micro-batches, the same
    on every call (a fresh loader with the run's seed). Batch i of rank r is the run's batch i * W + r, and that
    index alone seeds its masked-LM masks: one process calling this for each rank gets the batches, masks included,
    that the W ranks read (`webtext eval`, training/evaluate.py)."""
    loader = make_loader(cfg, "val", rank, world_size, cfg.seed)
    for i in range(batches):
        x, y = loader.next_batch()
        yield prepare_batch(cfg, model_cfg, x, y, cfg.seed + 1, -1, 0, i * world_size + rank)


@torch.no_grad()
def evaluate(engine, cfg: TrainConfig, rank: int, world_size: int, device) -> dict:
    """Mean loss over the fixed validation windows (`validation_batches`)."""
    engine.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in validation_batches(cfg, engine.module.config, rank, world_size, cfg.eval.batches):
        _, loss = engine(x.to(device), y.to(device))
        if torch.isfinite(loss):
            total += torch.stack([loss.double(), loss.new_ones((), dtype=torch.float64)])
    engine.train()
    dist.all_reduce(total)
    total = total.cpu()
    val_loss = (total[0] / total[1]).item() if total[1] > 0 else float("nan")
    return {"val_loss": val_loss, "val_ppl": math.exp(val_loss) if val_loss < 50 else float("inf")}


@dataclass
class StepResult:
    loss: float  # mean over micro-batches and ranks; NaN for a skipped step
    bad: bool  # a micro-batch's loss was NaN/inf on some rank: the step changed no weight
    lr: float  # the learning rate the step used
    grad_norm: float | None  # before clipping


class Stepper:
    """One optimizer step: `accum` micro-batches of forward, a loss check agreed by all ranks, backward; then the
    DeepSpeed step. A bad micro-batch back-propagates a zero loss instead (through the last good batch), so every
    rank's collectives stay in step, and the step's update is made with learning rate 0."""

    def __init__(self, engine, cfg: TrainConfig, loader, d, accum: int):
        self.engine, self.cfg, self.loader, self.d, self.accum = engine, cfg, loader, d, accum
        self.fallback = None

    def step(self, step: int) -> StepResult:
        engine, d = self.engine, self.d
        loss_sum, bad = 0.0, False
        for m in range(self.accum):
            x, y = self.loader.next_batch()
            x, y = prepare_batch(self.cfg, engine.module.config, x, y, self.cfg.seed, step, d.rank, m)
            x, y = x.to(d.device), y.to(d.device)
            _, loss = engine(x, y)
            check = torch.stack([loss.detach().double(), (~torch.isfinite(loss.detach())).double()])
            dist.all_reduce(check)  # on the device: NCCL reduces only GPU tensors
            check = check.cpu()
            bad = bad or bool(check[1] > 0)
            if bad:
                fx, fy = self.fallback if self.fallback is not None else (torch.zeros_like(x), torch.zeros_like(x))
                loss = engine(fx, fy)[1] * 0.0
            else:
                self.fallback = (x, y)
                loss_sum += check[0].item() / d.world_size
            engine.backward(loss)
            if m == self.accum - 1:
                lr = engine.get_lr()[0]
                measured_norm = local_grad_norm(engine)
                if bad:
                    _zero_lr(engine)
            engine.step()
        if bad:
            return StepResult(float("nan"), True, lr, None)
        return StepResult(loss_sum / self.accum, False, lr, grad_norm(engine, measured_norm))


def train_worker(config: dict) -> dict:
    """Train per `config` (a TrainConfig as a dict). Returns a summary (rank 0's view) when done."""
    cfg = TrainConfig.model_validate(config)
    d = init_distributed(cfg)
    _, accum, global_batch = cfg.batch.resolve(d.world_size)
    store = storage.RunStore(cfg.out_dir, cfg.staging_dir)
    out_dir, ckpt_root = store.local, store.ckpt_root
    tags = open_run(store, d, cfg.checkpoint.resume)

    seed_everything(cfg.seed)  # same on every rank: identical initial weights
    model = build_model(cfg)
    flops_per_token = model.flops_per_token(cfg.batch.seq_len)
    engine = build_engine(model, cfg, d.world_size)
    if cfg.model.compile:
        engine.compile()
    seed_everything(cfg.seed + d.rank)  # dropout differs per rank from here on

    loader = make_loader(cfg, "train", d.rank, d.world_size, cfg.seed)
    step, bad_steps, bad_in_a_row = 0, 0, 0
    if tags:
        state = checkpoint.load(engine, ckpt_root, tags[-1])
        if store.remote is not None:  # loaded: the staged copy has done its job
            dist.barrier()
            store.drop_staged(tags[-1])
        try:
            loader.load_state_dict(state["loader"])
        except ValueError as err:  # the config's data or seed changed since the checkpoint
            raise checkpoint.CheckpointError(
                f"{ckpt_root / tags[-1]}: {err}",
                hint="resume with the run's data and seed, or start afresh with --set checkpoint.resume=false") from None
        step, bad_steps, bad_in_a_row = state["step"], state["bad_steps"], state["bad_in_a_row"]

    # Lines a killed run logged after its checkpoint are dropped: this run logs those steps again.
    log = MetricsLog(out_dir, enabled=d.rank == 0, tensorboard=cfg.log.tensorboard, plot=cfg.log.plot,
                     start_step=step)
    if d.rank == 0:  # written here only, with an init_from model's architecture: what eval, export, generate read
        recorded = cfg.model_dump(mode="json")
        recorded["launch"]["num_workers"] = d.world_size  # as run: a user's own torchrun may start another number
        store.write_text("config.json", json.dumps(recorded, indent=2) + "\n")
    peak = peak_flops(device_name(), cfg.precision)
    tokens_per_step = global_batch * cfg.batch.seq_len
    stepper = Stepper(engine, cfg, loader, d, accum)
    summary: dict = {"resumed_from": tags[-1] if tags else None}
    t_last, tokens_since = time.perf_counter(), 0

    def save_checkpoint():
        trainer_state = {"step": step, "loader": loader.state_dict(), "bad_steps": bad_steps,
                         "bad_in_a_row": bad_in_a_row}
        checkpoint.save(engine, store, step, trainer_state, cfg.checkpoint.keep_last, cfg.checkpoint.export_fp32)
        if d.rank == 0:  # a killed run's curve survives up to its last checkpoint
            log.flush()
            store.push(*LOG_FILES)

    try:
        while step < cfg.max_steps:
            result = stepper.step(step)
            if result.bad:
                bad_steps += 1
                bad_in_a_row += 1
            else:
                bad_in_a_row = 0
            step += 1
            tokens_since += tokens_per_step
            if step % cfg.log.every == 0 or step == cfg.max_steps or result.bad:
                elapsed = time.perf_counter() - t_last
                tokens_per_s = tokens_since / elapsed if elapsed > 0 else 0.0
                log.log(step, loss=result.loss, lr=result.lr, grad_norm=result.grad_norm, tokens_per_s=tokens_per_s,
                        mfu=mfu(tokens_per_s, flops_per_token, peak, d.world_size), bad_steps=bad_steps,
                        tokens=step * tokens_per_step)
                t_last, tokens_since = time.perf_counter(), 0
            if result.bad and bad_in_a_row >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"loss was NaN/inf in {bad_in_a_row} consecutive steps (up to step {step}); stopping")
            if cfg.data.val and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.max_steps):
                metrics = evaluate(engine, cfg, d.rank, d.world_size, d.device)
                log.log(step, **metrics)
                summary.update(metrics)
                t_last = time.perf_counter()
            if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or step == cfg.max_steps:
                save_checkpoint()
                t_last = time.perf_counter()
    except BaseException:
        log.close()
        if d.rank == 0:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                store.push(*LOG_FILES)
        raise
    log.close()
    if d.rank == 0:
        store.push(*LOG_FILES)

    if cfg.checkpoint.export_hf:
        state = checkpoint.full_fp32_state_dict(engine)
        if d.rank == 0:
            from training.hf import export_hf

            export_hf(state, engine.module.config, out_dir / "hf", cfg.checkpoint.tokenizer_dir)
            store.push("hf")
    summary.update(step=step, bad_steps=bad_steps, rank=d.rank, world_size=d.world_size)
    if d.rank == 0:  # last: a summary says the run finished
        store.write_text("summary.json", json.dumps(summary, indent=2) + "\n")
    dist.barrier()
    return summary


def open_run(store: storage.RunStore, d, resume: bool) -> list[str]:
    """Collective. The run's complete checkpoints, oldest first (rank 0's listing, the same on every rank), the
    last being the newest whose files match its manifest: rank 0 verifies it, and one that fails is set aside
    (`RunStore.reject_checkpoint`) with a warning and the one before it tried. For a remote out_dir each staging
    directory starts empty and receives the checkpoint to verify and load, and rank 0's the metrics and TensorBoard
    events so far (appended to from here on). Without `resume` the checkpoints already there are set aside too."""
    if not resume and d.rank == 0:
        # Starting afresh: the previous run's checkpoints must not be what a later resume of this run takes.
        for tag in store.complete_tags():
            store.reject_checkpoint(tag, "superseded: a run started afresh in this out_dir (checkpoint.resume=false)")
    listing = [(store.complete_tags() if resume else [], uuid.uuid4().hex) if d.rank == 0 else None]
    dist.broadcast_object_list(listing, src=0)
    tags, attempt = listing[0]
    while True:
        tag = tags[-1] if tags else None
        if store.remote is not None:
            store.open_attempt(f"{attempt}-{len(tags)}", tag)
            dist.barrier()
        problem = [checkpoint.verify(store.ckpt_root / tag) if d.rank == 0 and tag else None]
        dist.broadcast_object_list(problem, src=0)
        if problem[0] is None:
            break
        tags = tags[:-1]
        if d.rank == 0:
            store.reject_checkpoint(tag, problem[0])
            instead = f"resuming from {tags[-1]} instead" if tags else "no earlier checkpoint: starting afresh"
            print(f"webtext: warning: checkpoint {tag} is damaged and set aside: {problem[0]}; {instead}",
                  file=sys.stderr, flush=True)
        dist.barrier()  # the next attempt resets the staging directory that rank 0's rejection may still write in
    if store.remote is not None and d.rank == 0:
        store.pull(METRICS_FILE, "tensorboard")
    return tags


def _zero_lr(engine) -> None:
    """Learning rate 0 for this optimizer step only (the schedule sets the next step's rate after it): AdamW's
    update and its decoupled weight decay are both multiplied by the rate, so no weight changes. The moment
    estimates still decay by one step, the one trace a skipped step leaves."""
    optimizer = engine.lr_scheduler.optimizer if engine.lr_scheduler is not None else engine.optimizer
    for group in optimizer.param_groups:
        group["lr"] = 0.0
