"""The model card (`README.md` in the Hugging Face format) that `webtext export` writes beside the weights: YAML front
matter (library, pipeline, license note, the validation loss as a `model-index` result), then the model, the
checkpoint it comes from, the data and config of the run, and its validation losses, all read from the run."""

from __future__ import annotations

import math

import yaml

from pipeline.storage import Dir, display_uri, join
from training.metrics import read_metrics
from training.run_status import tokens_at

LICENSE_NOTE = (
    "The weights were trained on the main text of third-party web pages (a WebText-style corpus), which stay under "
    "their authors' copyright and terms: use the model for research, as GPT-2's WebText models were released.")


def model_card(run: str, tag: str, step: int, config: dict, name: str) -> str:
    """The card's text for checkpoint `tag` (at `step`) of the run at `run` (a path or URI) with its `config`."""
    records = read_metrics(join(run, "metrics.jsonl")) if Dir(run).exists("metrics.jsonl") else []
    validations = [r for r in records if isinstance(r.get("val_loss"), (int, float)) and r["step"] <= step]
    val = validations[-1] if validations else None
    exact = [r for r in records if isinstance(r.get("val_exact_match"), (int, float)) and r["step"] <= step]
    model = config.get("model", {})
    data = config.get("data", {})
    tokens = tokens_at(records, step)
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-generation", "license": "other",
                  "license_name": "third-party-web-pages", "tags": ["gpt2", "webtext", "text-generation"]}
    if val is not None:
        metrics = [{"type": "loss", "value": round(float(val["val_loss"]), 6),
                    "name": f"validation loss (nats/token, step {val['step']})"},
                   {"type": "perplexity", "value": round(math.exp(val["val_loss"]), 4),
                    "name": "validation perplexity"}]
        if exact:
            metrics.append({"type": "exact_match", "value": exact[-1]["val_exact_match"],
                            "name": "validation QA exact match"})
        meta["model-index"] = [{"name": name, "results": [{
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": {"type": "webtext", "name": _data_name(data)},
            "metrics": metrics}]}]
    sizes = ", ".join(f"{k} {model[k]}" for k in ("size", "n_layer", "n_embd", "n_head", "block_size", "vocab_size")
                      if model.get(k) is not None)
    body = [
        f"# {name}",
        "",
        f"A GPT-2 language model ({sizes}) trained with [webtext](https://github.com/webtext/webtext) and DeepSpeed, "
        f"exported from checkpoint `{tag}` of the run `{display_uri(run)}`: step {step:,}"
        + (f", {tokens:,} tokens seen" if tokens is not None else "") + ".",
        "",
        "```python",
        "from transformers import GPT2LMHeadModel",
        'model = GPT2LMHeadModel.from_pretrained("path/to/this/directory")',
        "```",
        "",
        "## Data",
        "",
        *(f"- {split}: " + ", ".join(f"`{display_uri(s)}`" for s in _as_list(data.get(split))) for split in
          ("train", "val") if data.get(split)),
        *([f"- initialised from `{display_uri(str(model['init_from']))}`"] if model.get("init_from") else []),
        "",
        "## Evaluation",
        "",
        _validation_table(validations, exact),
        "",
        "## License and terms",
        "",
        LICENSE_NOTE,
        "",
        "## Training config",
        "",
        "The run's whole config (`config.json`), as `webtext pretrain --config` takes it:",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=True).rstrip(),
        "```",
        "",
    ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(body)


def _as_list(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _data_name(data: dict) -> str:
    train = _as_list(data.get("train") or ["unknown"])
    return display_uri(train[0])


def _validation_table(validations: list[dict], exact: list[dict]) -> str:
    if not validations:
        return "No validation loss was logged by the run."
    rows = ["| step | validation loss (nats/token) | perplexity |", "|---:|---:|---:|"]
    for record in validations:
        rows.append(f"| {record['step']:,} | {record['val_loss']:.4f} | {math.exp(record['val_loss']):.2f} |")
    if exact:
        rows.append("")
        rows.append(f"Exact match on held-out QA examples: {exact[-1]['val_exact_match']:.3f} "
                    f"(step {exact[-1]['step']:,}).")
    return "\n".join(rows)
