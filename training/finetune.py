"""Fine-tuning: a pretrained GPT-2 (one of our runs or a Hugging Face GPT-2 directory) trained further on JSONL
completion / QA / dialogue examples with loss on the answer spans only.

Nothing of pretraining is copied: the run is a `TrainConfig` (same YAML keys, same `--set`) plus a `finetune:`
section, and it goes through the same launchers (`training.launch.launch`: Ray Train by default, torchrun, local),
the same per-rank function (`training.loop.train_worker`: DeepSpeed engine, NaN-step skipping, logging,
validation loss, checkpoints with loader cursor and RNG, resume from the newest complete checkpoint). What is
fine-tuning's own:
- the start: our checkpoint is consolidated (`checkpoint.consolidate`) and written as a Hugging Face directory
  under `<out_dir>/init/`, which the loop loads through `model.init_from` (its existing path for a starting model);
- the data: the driver validates and tokenises the JSONL once (`training.finetune_data.prepare`) into
  `<out_dir>/data/{train,val}.npz`, which the loop reads with `data.loader: examples`; targets are IGNORE_INDEX outside answer spans,
  which the model's loss skips;
- the chat template, saved as `<out_dir>/webtext_chat_template.json` (and in the HF export) for generation;
- QA exact match on the validation split, measured after training with greedy decoding (`training.generate`),
  and added to `summary.json` next to the loop's validation loss (answer tokens only); each scored question with
  the model's answer beside the reference in `<out_dir>/exact_match.jsonl`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.config import Config, ConfigError
from pipeline.tokenizer import GPT2_N_VOCAB
from training.config import TrainConfig
from training.finetune_data import TEMPLATE_FILE, ChatTemplate, prepare
from training.metrics import ANSWERS_FILE
from training.resolve import Resolved, resolve, run_model_config
from training.storage import RunStore

LOADER = "examples"


class FinetuneDataConfig(Config):
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="examples hashed into the validation split")
    val_data: list[str] = Field(default_factory=list, description="JSONL files used as the validation split "
                                                                  "instead of a hashed fraction")
    too_long: Literal["error", "drop"] = Field("error", description="an example longer than seq_len + 1 tokens: "
                                                                    "fail, or drop it to data/rejected.jsonl")
    exact_match_examples: int = Field(200, ge=0, description="QA validation examples scored for exact match "
                                                             "after training (0: none)")
    max_new_tokens: int = Field(32, ge=1, description="answer length limit when scoring exact match")


class FinetuneConfig(TrainConfig):
    out_dir: str = "runs/finetune"
    finetune: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)


def _rank_suffix() -> str:
    """Under torchrun every rank prepares (there is no process group yet): each into its own files, identical in
    content, so no rank reads a file another is writing. Launched by us, one driver prepares for all. (A process
    that already ran the local launcher has RANK set by it and a process group: it is a driver, not a rank.)"""
    import torch.distributed as dist

    from training.engine import started_as_rank

    return f"-rank{os.environ['RANK']}" if started_as_rank() and not dist.is_initialized() else ""


def source_model(source: str | Path, out_dir: Path) -> tuple[Resolved, Path, dict]:
    """What `--from` names (`training.resolve`), a Hugging Face directory holding its weights, and their dimensions
    (n_layer, n_head, n_embd, block_size, vocab_size). Our runs and checkpoints are consolidated to fp32 and
    exported to `out_dir/init`."""
    from training import checkpoint
    from training.hf import export_hf

    resolved = resolve(source)
    if resolved.kind == "hf":
        hf = json.loads((resolved.path / "config.json").read_text())
        dims = {"n_layer": hf["n_layer"], "n_head": hf["n_head"], "n_embd": hf["n_embd"],
                "block_size": hf["n_positions"], "vocab_size": hf["vocab_size"]}
        return resolved, resolved.path.resolve(), dims
    gpt_config = run_model_config(resolved.run_dir)
    if gpt_config.objective != "clm":
        raise ConfigError(f"{resolved.run_dir}/config.json: model.objective is {gpt_config.objective!r}; fine-tuning "
                          "for completion, QA and dialogue needs a causal LM (clm)")
    init_dir = out_dir / f"init{_rank_suffix()}"
    export_hf(checkpoint.consolidate(resolved.ckpt_root, resolved.tag), gpt_config, init_dir)
    (init_dir / "SOURCE").write_text(f"{resolved.describe()}\n")
    dims = {k: getattr(gpt_config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    return resolved, init_dir, dims


def prepare_run(cfg: FinetuneConfig, source: str | Path, data_files: list[str]) -> tuple[TrainConfig, dict]:
    """Everything before the processes start: starting weights, data and template in out_dir; the TrainConfig
    the loop runs. Returns it and facts for the summary. For a URI out_dir they are made in this machine's driver
    staging directory and uploaded, and the config names their URIs: the ranks may run on other machines."""
    store = RunStore(cfg.out_dir, cfg.staging_dir, role="driver")
    out_dir = store.local.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not data_files:
        raise ConfigError("finetune: give at least one --data FILE")
    resolved, init_dir, dims = source_model(source, out_dir)
    if dims["vocab_size"] < GPT2_N_VOCAB:
        raise ConfigError(f"{source}: vocabulary of {dims['vocab_size']} tokens; fine-tuning data is GPT-2 BPE "
                          f"({GPT2_N_VOCAB})")
    config = cfg.model_dump(mode="json", exclude={"finetune"})
    config["out_dir"] = cfg.out_dir if store.remote is not None else str(out_dir)
    if init_dir.is_relative_to(out_dir):  # ours: uploaded with the run for a URI out_dir
        store.push(init_dir.name)
        init_from = store.uri(init_dir.name) if store.remote is not None else str(init_dir)
    elif resolved.remote:  # a Hugging Face directory at a URI: each machine fetches its own copy
        init_from = resolved.source
    else:  # a local Hugging Face directory given as --from, as it is
        init_from = str(init_dir)
    config["model"].update(dims, init_from=init_from, objective="clm")
    _validated(config)  # the batch and model fit each other before any data is read
    data_dir = out_dir / f"data{_rank_suffix()}"
    data_dir.mkdir(exist_ok=True)

    from pipeline.tokenizer import gpt2_encoding

    template = ChatTemplate()
    seq_len = cfg.batch.seq_len
    train, val, rejected = prepare(data_files, seq_len, gpt2_encoding(), template, cfg.finetune.val_fraction,
                                   cfg.finetune.val_data, cfg.finetune.too_long)
    if not train.examples:
        raise ConfigError(f"finetune: no training examples in {', '.join(data_files)}")
    train.save(data_dir / "train.npz")
    config["data"] = {**config["data"], "train": [store.uri(f"{data_dir.name}/train.npz")], "val": [],
                      "loader": LOADER}
    if val.examples:
        val.save(data_dir / "val.npz")
        config["data"]["val"] = [store.uri(f"{data_dir.name}/val.npz")]
    (data_dir / "val_examples.jsonl").write_text(
        "".join(json.dumps({"source": e.source, "kind": e.kind, "record": e.record}) + "\n" for e in val.examples))
    (data_dir / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejected))
    template.save(out_dir)
    (out_dir / "finetune.json").write_text(json.dumps(
        {**cfg.model_dump(mode="json"), "from": str(source), "data_files": [str(f) for f in data_files]},
        indent=2) + "\n")
    store.push(data_dir.name, TEMPLATE_FILE, "finetune.json")
    train_cfg = _validated(config)
    facts = {"train_examples": len(train.examples), "val_examples": len(val.examples), "rejected": len(rejected),
             "init_from": init_from, "data_dir": str(data_dir)}
    return train_cfg, facts


def _validated(config: dict) -> TrainConfig:
    try:
        return TrainConfig.model_validate(config)
    except ValueError as err:
        raise ConfigError(f"finetune: {err}") from None


def exact_match(run_dir: str | Path, examples: list[dict], max_new_tokens: int, limit: int,
                device: str = "cpu") -> tuple[dict, list[dict]]:
    """Greedy answers to the QA validation examples from the run's final weights, compared to the reference
    answers after stripping surrounding whitespace: the scores, and per example its question, the model's
    answer, the reference and whether they match (written to ANSWERS_FILE)."""
    from pipeline.tokenizer import gpt2_encoding
    from training.generate import Sampling, generate_text, load_model

    qa = [e["record"] for e in examples if e["kind"] == "qa"][:limit]
    if not qa:
        return {}, []
    model, template = load_model(run_dir, device)
    template = template or ChatTemplate()
    encoding = gpt2_encoding()
    prompts = [template.qa_prompt(r["question"], r.get("context")) for r in qa]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=(template.end_of_turn_id,))
    answers: list[str] = []
    for i in range(0, len(prompts), 32):
        answers += generate_text(model, encoding, prompts[i:i + 32], sampling)
    scored = [{"question": r["question"], "answer": a.strip(), "reference": r["answer"].strip(),
               "exact": a.strip() == r["answer"].strip()} for a, r in zip(answers, qa)]
    hits = sum(row["exact"] for row in scored)
    return {"val_exact_match": hits / len(qa), "val_qa_examples": len(qa)}, scored


def finetune(cfg: FinetuneConfig, source: str | Path, data_files: list[str]) -> dict:
    """Prepare, train on the configured launcher, score exact match; returns the run's summary."""
    from training.launch import launch, read_summary
    from training.loop import LOG_FILES, train_worker

    under_torchrun = bool(_rank_suffix())  # read now: the local launcher sets RANK in this process later
    train_cfg, facts = prepare_run(cfg, source, data_files)
    store = RunStore(train_cfg.out_dir, cfg.staging_dir, role="driver")
    out_dir = train_cfg.out_dir
    if under_torchrun:  # one rank of torchrun / deepspeed started by the user
        summary = train_worker(train_cfg.model_dump(mode="json"))
        if summary.get("rank", 0) != 0:
            return summary
    else:
        summary = launch(train_cfg)
    summary = {**read_summary(out_dir), **summary, **facts}
    if cfg.finetune.exact_match_examples:
        val_file = Path(facts["data_dir"]) / "val_examples.jsonl"
        examples = [json.loads(line) for line in val_file.read_text().splitlines()]
        device = "cuda" if cfg.launch.use_gpu else "cpu"
        scores, answers = exact_match(out_dir, examples, cfg.finetune.max_new_tokens,
                                      cfg.finetune.exact_match_examples, device)
        summary.update(scores)
        store.write_text(ANSWERS_FILE, "".join(json.dumps(row) + "\n" for row in answers))
        if scores:  # next to the loop's val_loss in metrics.jsonl and TensorBoard
            from training.metrics import METRICS_FILE, MetricsLog

            store.pull(METRICS_FILE)
            log = MetricsLog(store.local, enabled=True, tensorboard=cfg.log.tensorboard, start_step=summary["step"])
            log.log(summary["step"], **scores)
            log.close()
            store.push(*LOG_FILES)
    if store.exists("hf"):
        if store.remote is not None:
            store.remote.write_bytes(f"hf/{TEMPLATE_FILE}", (store.local / TEMPLATE_FILE).read_bytes())
        else:
            shutil.copyfile(store.local / TEMPLATE_FILE, store.local / "hf" / TEMPLATE_FILE)
    store.write_text("summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
