"""`webtext pretrain`: train a GPT-2 model on token shards with DeepSpeed ZeRO, launched by Ray Train (default),
torchrun or in-process, from one typed config (YAML + --set).

Rerunning the same command resumes: from the newest complete checkpoint in out_dir whose files match their
recorded sizes and checksums (a damaged one is set aside with a warning and the one before it used), with the
data position, RNG states and schedule as they were, so the run continues exactly (checkpoint.resume: false
starts afresh).

Also the entry point for `ray job submit -- python -m jobs.pretrain --config FILE`, and for ranks started by
`torchrun --nproc_per_node 2 -m jobs.pretrain --config FILE` or `deepspeed --num_gpus 2 --module jobs.pretrain
--config FILE`: with RANK, WORLD_SIZE and MASTER_ADDR set, this process is one rank and trains directly.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import module_main
from jobs.common import report_training_run
from jobs.console import attach_log, console
from pipeline.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train GPT-2 on token shards with DeepSpeed ZeRO (Ray Train, torchrun or in-process). Rerunning the same "
        "command resumes the run in its out_dir: from the newest complete checkpoint whose files match their "
        "recorded checksums, exactly where it left off (data position, RNG states, schedule); a damaged checkpoint "
        "is set aside with a warning and the one before it used. --set checkpoint.resume=false starts afresh.")
    parser.add_argument("--config", required=True, help="YAML training config (configs/pretrain_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set zero.stage=2")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and print the DeepSpeed JSON and the parameter count (with and "
                             "without the vocabulary padding); train nothing")
    # The deepspeed launcher passes --local_rank to each rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.engine import started_as_rank
    from training.launch import launch
    from training.loop import train_worker

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if args.dry_run:
        import torch

        from training.model import GPT

        world = cfg.launch.num_workers
        with torch.device("meta"):  # shapes only: any size in no memory and no time
            model = GPT(cfg.model.gpt_config())
        parameters = model.num_params(non_embedding=False)
        console().print(json.dumps({"parameters": parameters,
                          "parameters_without_vocab_padding": parameters - model.config.padding_params,
                          "flops_per_token": model.flops_per_token(cfg.batch.seq_len),
                          "deepspeed": cfg.deepspeed_config(world)}, indent=2))
        return 0
    if started_as_rank():  # one rank of torchrun / deepspeed: its launcher owns the terminal
        summary = train_worker(cfg.model_dump(mode="json"))
    else:
        attach_log(cfg.out_dir)
        with console().training("pretrain", cfg.out_dir, cfg.max_steps):
            summary = launch(cfg)
    report_training_run(summary, cfg.out_dir, "pretrain")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.pretrain"))
