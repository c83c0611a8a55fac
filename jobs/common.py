"""What the job commands share: stage arguments (--out, --config, --set, where to run), the funnel printout, and
the end of a training job (its summary line and report)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from jobs.console import attach_log, console
from pipeline.config import Config, load_config
from jobs.report import write_report
from pipeline.runner import RunOptions, Stage, StageResult, format_funnel, run_stage
from pipeline.storage import expand_inputs


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output root (path or URI); the stage writes <out>/<stage>/")
    parser.add_argument("--config", help="YAML config for the stage")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set min_karma=5")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=["ray", "local"], default="ray",
                        help="ray (default): Ray tasks; local: this process only")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded Ray)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")


def report_training_run(summary: dict, out_dir: str, label: str) -> None:
    """On rank 0: the run's summary as one JSON line on stdout, then its report.html (path on stderr)."""
    if summary.get("rank", 0) != 0:
        return
    console().print(json.dumps(summary))
    report = write_report(out_dir, {label: out_dir}, corpus=False, title=f"webtext {label}")
    console().note(f"report in {report}")


def run_options(args: argparse.Namespace) -> RunOptions:
    """How to run a command's stages; its logs go under its --out from here on, its progress to the console."""
    attach_log(args.out)
    return RunOptions(executor=args.executor, address=args.address, num_cpus=args.num_cpus, force=args.force,
                      progress=console().stage_progress())


def stage_config(model: type[Config], args: argparse.Namespace) -> Config:
    return load_config(model, args.config, args.overrides)


def run_and_report(stage: Stage, input_specs: list[str], args: argparse.Namespace) -> StageResult:
    """Expand inputs, run the stage, print the funnel table to stdout, write the output root's report.html."""
    result = run_stage(stage, expand_inputs(input_specs), args.out, run_options(args))
    console().print(format_funnel(result))
    write_stage_report(args.out, stage.name)
    return result


def write_stage_report(out: str, stage_name: str) -> None:
    """The report of the output root a stage wrote into: every stage found there, this one included."""
    console().note(f"report in {write_report(out, title=f'webtext {stage_name} report')}")


@dataclass(frozen=True)
class StageCommand:
    """`webtext <stage> --<inputs> PATH… --out DIR`: one input flag, the shared arguments, the funnel printed."""

    stage: type[Stage]
    config: type[Config]
    inputs_flag: str
    inputs_help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(f"--{self.inputs_flag}", dest="inputs", nargs="+", required=True, metavar="PATH",
                            help=self.inputs_help)
        add_stage_arguments(parser)

    def run(self, args: argparse.Namespace) -> StageResult:
        return run_and_report(self.stage(stage_config(self.config, args)), args.inputs, args)
