"""`webtext generate`: sample continuations from a checkpoint (a run directory, <run>/checkpoints/step_N, or a
Hugging Face GPT-2 directory) on CPU or GPU. Several --prompt are one left-padded batch. With --chat each prompt is
a user message and the reply is the assistant turn, through the chat template saved with the run. Prints one JSON
line per prompt: {"prompt", "completion"}; with --out, also writes them to <out>/samples.jsonl and a report.html
showing them (and the run's training curves when --ckpt is a run directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from jobs.cli import UserError, module_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="CKPT",
                        help="run directory (newest checkpoint), <run>/checkpoints/step_N, or an HF GPT-2 dir")
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="prompt text (repeat for a batch)")
    parser.add_argument("--chat", action="store_true", help="treat each prompt as a user message; reply as the "
                                                            "assistant, stopping at the end-of-turn marker")
    parser.add_argument("--system", help="system message for --chat")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, help="sampling seed (same seed, same output)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole prefix each token")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--out", help="directory for samples.jsonl and report.html (default: stdout only)")


def run(args: argparse.Namespace) -> int:
    import torch

    from pipeline.tokenizer import gpt2_encoding
    from training.finetune_data import ChatTemplate, FinetuneDataError
    from training.generate import Sampling, chat_prompt, chat_sampling, generate_text, load_model

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache)
    except ValueError as err:
        raise UserError(str(err), hint="give the sampling options values in their ranges (webtext generate --help)") from None
    # DeepSpeed prints while consolidating a ZeRO checkpoint; stdout carries only the JSON lines.
    with contextlib.redirect_stdout(sys.stderr):
        model, template = load_model(args.ckpt, device)
    encoding = gpt2_encoding()
    prompts = args.prompt
    if args.chat:
        if template is None:
            print(f"webtext: note: {args.ckpt} has no saved chat template; using the default", file=sys.stderr)
            template = ChatTemplate()
        system = [{"role": "system", "content": args.system}] if args.system else []
        try:
            texts = [chat_prompt(template, system + [{"role": "user", "content": prompt}], f"--prompt #{i + 1}")
                     for i, prompt in enumerate(prompts)]
        except FinetuneDataError as err:  # its hint is about files of examples: here it is a --prompt
            raise UserError(str(err), hint="reword that --prompt (or --system) without the chat template's markers") from None
        sampling = chat_sampling(template, sampling)
    else:
        texts = prompts
    try:
        completions = generate_text(model, encoding, texts, sampling)
    except ValueError as err:
        raise UserError(str(err), hint="shorten the prompt, or use a causal-LM checkpoint (objective: clm)") from None
    lines = [json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) for p, c in zip(prompts, completions)]
    print("\n".join(lines))
    if args.out:
        write_samples(args.out, args.ckpt, lines, [p + c for p, c in zip(prompts, completions)])
    return 0


def write_samples(out: str, ckpt: str, lines: list[str], samples: list[str]) -> None:
    from jobs.report import write_report
    from pipeline.storage import Dir
    from training.metrics import METRICS_FILE

    Dir(out).write_bytes("samples.jsonl", "".join(line + "\n" for line in lines).encode("utf-8"))
    runs = {"training run": ckpt} if Dir(ckpt).exists(METRICS_FILE) else {}  # a run dir, not a checkpoint
    report = write_report(out, runs, samples, title=f"webtext samples from {ckpt}", corpus=False)
    print(f"samples and report in {out}/ ({report})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(module_main("jobs.generate"))
