"""Training metrics: one JSON line per logged step (`metrics.jsonl`), a fine-tuning run's scored answers
(`exact_match.jsonl`), TensorBoard scalars, a loss-curve PNG, and model FLOPs utilisation against a table of peak
FLOP/s by device name.

MFU = achieved model FLOP/s / peak FLOP/s of the device at the training precision. Where the device is not in
the table (every CPU), MFU is reported as "unknown" rather than invented.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pipeline.storage import filesystem, is_uri

METRICS_FILE = "metrics.jsonl"  # in a run directory: one JSON record per logged step
ANSWERS_FILE = "exact_match.jsonl"  # in a fine-tuning run: per scored QA example, question, answer, reference, exact

# Dense peak FLOP/s per device, from the vendors' datasheets (no sparsity). Matched as substrings of
# torch.cuda.get_device_name(), most specific first.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("GH200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("B200", {"bf16": 2250e12, "fp16": 2250e12, "fp32": 80e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    ("A10G", {"bf16": 70e12, "fp16": 70e12, "fp32": 31.2e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12}),
    ("L4", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),
    ("RTX 4090", {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12}),
]


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def peak_flops(name: str, precision: str) -> float | None:
    for key, peaks in PEAK_FLOPS:
        if key in name:
            return peaks.get(precision)
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None, n_devices: int) -> float | None:
    if peak is None:
        return None
    return tokens_per_s * flops_per_token / (peak * n_devices)


class MetricsLog:
    """Rank 0's log of a run; other ranks hold a disabled instance so call sites need no branches. A run that
    starts at `start_step` (resumed from that step's checkpoint) first drops the lines of later steps, which a
    killed run logged and this one logs again: one line per step and record kind, for every reader."""

    def __init__(self, out_dir: str | Path, enabled: bool, tensorboard: bool = True, plot: bool = True,
                 start_step: int = 0):
        self.enabled, self.plot = enabled, plot
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / METRICS_FILE
        self._writer = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            drop_steps_after(self.path, start_step)
            self._file = open(self.path, "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # TensorBoard hides the events a killed run wrote after the resumed step, as the JSONL drops them.
                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, **values) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _clean(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def flush(self) -> None:
        """Everything logged so far on disk (the JSONL is line-buffered; TensorBoard's writer is not)."""
        if self.enabled and self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._writer is not None:
            self._writer.close()
        if self.plot:
            plot_loss_curve(self.path, self.out_dir / "loss.png")


def drop_steps_after(path: Path, step: int) -> None:
    """Rewrite a metrics.jsonl without its records past `step`, atomically (a temporary file renamed over it).
    A last line cut short by a kill is dropped too."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if value is None:
        return "unknown"
    return value


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl (a path or URI); a resumed run's later records for a step replace earlier ones."""
    by_key: dict[tuple, dict] = {}
    if is_uri(str(path)):  # a run's metrics at a URI (training/storage.py uploads them)
        fs, fs_path = filesystem(str(path))
        with fs.open_input_stream(fs_path, compression=None) as f:
            text = f.read().decode()
    else:
        text = Path(path).read_text()
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            by_key[(record["step"], tuple(sorted(k for k in record if k != "step")))] = record
    return sorted(by_key.values(), key=lambda r: r["step"])


def losses_by_step(path: str | Path, key: str = "loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(path) if isinstance(r.get(key), float)}


def plot_loss_curve(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = losses_by_step(metrics_path, "loss")
    val = losses_by_step(metrics_path, "val_loss")
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(list(train), list(train.values()), label="train loss", linewidth=1)
    if val:
        ax.plot(list(val), list(val.values()), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
