"""`webtext pretrain`: train a GPT-2 model on token shards with DeepSpeed ZeRO, launched by Ray Train (default),
torchrun or in-process, from one typed config (YAML + --set). Resumes from the newest checkpoint in out_dir.

Also the entry point for `ray job submit -- python -m jobs.pretrain --config FILE`, and for ranks started by
`torchrun --nproc_per_node 2 -m jobs.pretrain --config FILE` or `deepspeed --num_gpus 2 --module jobs.pretrain
--config FILE`: with RANK, WORLD_SIZE and MASTER_ADDR set, this process is one rank and trains directly.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import UserError, module_main
from jobs.common import report_training_run
from pipeline.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML training config (configs/pretrain_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set zero.stage=2")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and print the DeepSpeed JSON and model size; train nothing")
    # The deepspeed launcher passes --local_rank to each rank; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.engine import started_as_rank
    from training.launch import LaunchError, launch
    from pipeline.shards import ShardError
    from training.loop import TrainingDiverged, train_worker

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if args.dry_run:
        from training.model import GPT

        world = cfg.launch.num_workers
        model = GPT(cfg.model.gpt_config())
        print(json.dumps({"parameters": model.num_params(non_embedding=False),
                          "flops_per_token": model.flops_per_token(cfg.batch.seq_len),
                          "deepspeed": cfg.deepspeed_config(world)}, indent=2))
        return 0
    try:
        if started_as_rank():  # one rank of torchrun / deepspeed
            summary = train_worker(cfg.model_dump(mode="json"))
        else:
            summary = launch(cfg)
    except (LaunchError, TrainingDiverged, ShardError) as err:
        raise UserError(str(err)) from None
    report_training_run(summary, cfg.out_dir, "pretrain")
    return 0


if __name__ == "__main__":
    sys.exit(module_main("jobs.pretrain"))
