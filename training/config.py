"""The typed pretraining config (YAML + `--set`), its batch arithmetic, and the DeepSpeed JSON generated from it.

One `TrainConfig` describes a run: model, data, batch, optimizer and schedule, ZeRO stage and offload, precision,
checkpoints, evaluation, logging and the launcher. `deepspeed_config(world_size)` is the only place a DeepSpeed
config is made; nothing is hand-written.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import Config, ConfigError
from training.model import SIZES, GPTConfig


class ModelConfig(Config):
    size: Literal["tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"] = "gpt2"
    n_layer: int | None = Field(None, ge=1, description="overrides the size's layer count")
    n_head: int | None = Field(None, ge=1)
    n_embd: int | None = Field(None, ge=1)
    block_size: int = Field(1024, ge=1)
    vocab_size: int = Field(50257, ge=2)
    pad_vocab_to: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    objective: Literal["clm", "mlm"] = "clm"
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    activation_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile the model through DeepSpeed (GPUs; slow to start)")
    init_from: str | None = Field(None, description="a Hugging Face GPT-2 directory to start from; the run takes "
                                                    "its architecture (written into the run's config.json)")
    # GPT-2 variants (set from an init_from model's config; GPT-2's own values by default)
    tie_word_embeddings: bool = True
    layer_norm_eps: float = Field(1e-5, gt=0)
    scale_attn_by_inverse_layer_idx: bool = False
    upcast_attn: bool = False

    def gpt_config(self) -> GPTConfig:
        n_layer, n_head, n_embd = SIZES[self.size]
        return GPTConfig(
            n_layer=self.n_layer or n_layer, n_head=self.n_head or n_head, n_embd=self.n_embd or n_embd,
            block_size=self.block_size, vocab_size=self.vocab_size, pad_vocab_to=self.pad_vocab_to,
            dropout=self.dropout, objective=self.objective, activation_checkpointing=self.activation_checkpointing,
            **{name: getattr(self, name) for name in ARCHITECTURE_VARIANTS},
        )

    def set_architecture(self, config: GPTConfig) -> None:
        """Take a built model's shape and variant switches (a model imported from `init_from`)."""
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", *ARCHITECTURE_VARIANTS):
            setattr(self, name, getattr(config, name))


ARCHITECTURE_VARIANTS = ("tie_word_embeddings", "layer_norm_eps", "scale_attn_by_inverse_layer_idx", "upcast_attn")


# What runs saved before `data.loader` was a choice (their config.json) said instead.
LEGACY_LOADERS = {"training.data:TokenWindows": "tokens", "training.finetune_data:ExampleBatches": "examples"}


class DataConfig(Config):
    train: list[str] = Field(default_factory=list,
                             description="token shard files, globs, or tokenize output directories (index.json)")
    val: list[str] = Field(default_factory=list)
    loader: Literal["tokens", "examples"] = Field(
        "tokens", description="tokens: windows of the token shards (pretraining); examples: the prepared .npz "
                              "examples of a fine-tuning run")

    @field_validator("loader", mode="before")
    @classmethod
    def _legacy_loader(cls, value):
        return LEGACY_LOADERS.get(value, value)
    cache_dir: str | None = Field(None, description="where each machine keeps its copies of shards named by a URI "
                                                    "(default $WEBTEXT_CACHE or ~/.cache/webtext, then shards/)")


class BatchConfig(Config):
    seq_len: int = Field(1024, ge=1)
    micro_batch_size: int = Field(8, ge=1, description="sequences per rank per forward pass")
    grad_accum_steps: int | None = Field(None, ge=1)
    global_batch_size: int | None = Field(None, ge=1, description="sequences per optimizer step, all ranks")

    def resolve(self, world_size: int) -> tuple[int, int, int]:
        """(micro, accumulation, global) with micro x accumulation x world = global, or a ConfigError."""
        micro, accum, total = self.micro_batch_size, self.grad_accum_steps, self.global_batch_size
        if total is None:
            accum = accum or 1
            return micro, accum, micro * accum * world_size
        per_step = micro * world_size
        if total % per_step:
            raise ConfigError(
                f"batch.global_batch_size {total} is not a multiple of batch.micro_batch_size {micro} "
                f"x world size {world_size} = {per_step}")
        if accum is not None and micro * accum * world_size != total:
            raise ConfigError(
                f"batch: micro_batch_size {micro} x grad_accum_steps {accum} x world size {world_size} = "
                f"{micro * accum * world_size}, not global_batch_size {total}")
        return micro, total // per_step, total


class OptimConfig(Config):
    lr: float = Field(6e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="lr at the end of the cosine, as a fraction of lr")
    warmup_steps: int = Field(100, ge=1)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")


class ZeroConfig(Config):
    stage: Literal[0, 1, 2, 3] = 1
    offload_optimizer: bool = False
    offload_params: bool = False

    @model_validator(mode="after")
    def _offload_needs_zero(self):
        if self.offload_optimizer and self.stage < 1:
            raise ValueError("offload_optimizer needs ZeRO stage 1, 2 or 3")
        if self.offload_params and self.stage != 3:
            raise ValueError("offload_params needs ZeRO stage 3")
        return self


class CheckpointConfig(Config):
    every: int = Field(1000, ge=0, description="steps between checkpoints; 0: only at the end")
    keep_last: int = Field(3, ge=1)
    resume: bool = Field(True, description="continue from the newest complete checkpoint in out_dir")
    export_fp32: bool = Field(False, description="also write a consolidated fp32 safetensors per checkpoint")
    export_hf: bool = Field(False, description="write a Hugging Face GPT-2 export at the end")
    tokenizer_dir: str | None = Field(None, description="OpenAI's encoder.json + vocab.bpe, for export_hf")


class EvalConfig(Config):
    every: int = Field(500, ge=0, description="steps between validation passes; 0: only at the end")
    batches: int = Field(20, ge=1, description="micro-batches per rank in the fixed validation set")


class LogConfig(Config):
    every: int = Field(10, ge=1)
    tensorboard: bool = True
    plot: bool = Field(True, description="write loss.png (matplotlib) at the end of the run")


class LaunchConfig(Config):
    launcher: Literal["ray", "torchrun", "local"] = "ray"
    num_workers: int = Field(1, ge=1, description="training processes (ranks)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    address: str | None = Field(None, description="Ray cluster address; default RAY_ADDRESS or an embedded Ray")
    rendezvous: Literal["auto", "file", "tcp"] = Field(
        "auto", description="process-group store: file opens no port (one machine); auto = file unless on a cluster")
    threads_per_worker: int | None = Field(None, ge=1, description="torch threads per rank (default cores/ranks)")


class TrainConfig(Config):
    out_dir: str = Field("runs/pretrain", description="a local path, or a URI (s3://...) every machine reaches")
    staging_dir: str | None = Field(None, description="for a URI out_dir: where each machine keeps its working "
                                                      "copy, under <hash of out_dir>/ (default "
                                                      "$WEBTEXT_CACHE or ~/.cache/webtext, then runs/)")
    max_steps: int = Field(1000, ge=1)
    seed: int = 1337
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    max_bad_steps: int = Field(5, ge=1, description="consecutive non-finite losses before the run stops")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    zero: ZeroConfig = Field(default_factory=ZeroConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.batch.seq_len > self.model.block_size:
            raise ValueError(f"batch.seq_len {self.batch.seq_len} exceeds model.block_size {self.model.block_size}")
        if self.precision == "fp16" and not self.launch.use_gpu:
            raise ValueError("precision fp16 needs GPUs (launch.use_gpu: true); DeepSpeed on CPU has bf16 and fp32")
        if self.optim.warmup_steps > self.max_steps:
            raise ValueError(f"optim.warmup_steps {self.optim.warmup_steps} exceeds max_steps {self.max_steps}")
        return self

    def check_batch(self, world_size: int | None = None) -> tuple[int, int, int]:
        return self.batch.resolve(world_size or self.launch.num_workers)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warmup from lr/warmup_steps, then a cosine
        down to min_lr_ratio x lr at max_steps (nanoGPT's schedule)."""
        o = self.optim
        if step < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        progress = min(1.0, (step - o.warmup_steps) / max(1, self.max_steps - o.warmup_steps))
        return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def deepspeed_config(self, world_size: int) -> dict:
        """The DeepSpeed JSON. The schedule (`lr_at`) goes to DeepSpeed as an object, not as a "scheduler" entry:
        DeepSpeed's WarmupCosineLR trains its first steps at lr 0. DeepSpeed still saves and restores it."""
        micro, accum, total = self.batch.resolve(world_size)
        o = self.optim
        zero: dict = {"stage": self.zero.stage}
        if self.zero.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.launch.use_gpu}
        if self.zero.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.launch.use_gpu}
        if self.zero.stage == 3:
            # Gather every parameter on first use and keep nothing resident beyond that: small models on CPU too.
            zero["stage3_param_persistence_threshold"] = 0
        return {
            "train_batch_size": total,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": accum,
            "gradient_clipping": o.grad_clip,
            "zero_optimization": zero,
            "bf16": {"enabled": self.precision == "bf16"},
            "fp16": {"enabled": self.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
            "optimizer": {
                "type": "AdamW",
                "params": {
                    "lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay,
                    # torch's AdamW on CPU: no JIT build of fused_adam (../shared/FACTS.md); DeepSpeed's own on GPU.
                    **({} if self.launch.use_gpu else {"torch_adam": True}),
                },
            },
            "steps_per_print": 10**9,  # we log ourselves (training/metrics.py)
            "wall_clock_breakdown": False,
        }
