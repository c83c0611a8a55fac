#!/usr/bin/env bash
# GPU benchmark: GPT-2 (124M), bf16, ZeRO-2, block 1024, on one GPU, launched with torchrun (no Ray needed).
# Prints tokens/s and MFU (model FLOPs per token incl. attention x tokens/s / the GPU's dense bf16 peak) as the
# median over the steps after warm-up, then `RESULT gpu_mfu=<value> goal>=0.50` (nanoGPT: 37 % on an A100).
#
# The machine needs PyTorch with CUDA; no network and no Ray. The rest of what training imports (deepspeed,
# pydantic, pyyaml, safetensors, numpy) is installed offline from WHEELS (default ./wheels) when missing
# (pyarrow is needed only to print one-line user errors; tensorboard and matplotlib are switched off here).
# Make that wheelhouse where there is network:
#   pip wheel --no-deps -w wheels deepspeed==0.19.8          # pure Python with ops left to JIT (DS_BUILD_OPS=0)
#   pip download -d wheels hjson ninja msgpack py-cpuinfo psutil einops pydantic pyyaml safetensors
# Knobs (environment): STEPS (default 30), MICRO (micro-batch per GPU, default 32), COMPILE (1: torch.compile).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${STEPS:-30}
MICRO=${MICRO:-32}
COMPILE=${COMPILE:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/webtext-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if ! $PY -c "import deepspeed, pydantic, yaml, safetensors" 2>/dev/null; then
    $PY -m pip install -q --no-index --find-links "${WHEELS:-wheels}" deepspeed pydantic pyyaml safetensors
fi
$PY - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}")
EOF

# Random tokens: throughput does not depend on the text. 64M tokens, more than STEPS x 524k.
$PY - "$WORK/data/part-train-00000.bin" <<'EOF'
import sys, pathlib, numpy as np
sys.path.insert(0, ".")
from pipeline.shards import shard_header
path = pathlib.Path(sys.argv[1]); path.parent.mkdir(parents=True)
tokens = np.random.default_rng(0).integers(0, 50257, size=64 * 2**20).astype("<u2")
path.write_bytes(shard_header(len(tokens)) + tokens.tobytes())
EOF

# 512 sequences (524,288 tokens) per step as in GPT-2 / llm.c: accumulation = 512 / MICRO on one GPU.
OMP_NUM_THREADS=8 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m jobs.pretrain \
    --config configs/pretrain_gpt2.yaml \
    --set out_dir="$WORK/run" --set max_steps="$STEPS" --set optim.warmup_steps=5 \
    --set "data.train=['$WORK/data/part-train-00000.bin']" --set "data.val=[]" \
    --set batch.micro_batch_size="$MICRO" --set batch.global_batch_size=512 \
    --set launch.launcher=torchrun --set launch.num_workers=1 --set log.every=1 --set log.tensorboard=false --set log.plot=false \
    --set checkpoint.every=0 --set checkpoint.export_hf=false --set checkpoint.resume=false \
    --set model.compile="$([ "$COMPILE" = 1 ] && echo true || echo false)"

$PY - "$WORK/run/metrics.jsonl" <<'EOF'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
steady = [r for r in records if "tokens_per_s" in r and r["step"] > 5]  # after compile and warm-up
tps = statistics.median(r["tokens_per_s"] for r in steady)
mfus = [r["mfu"] for r in steady if isinstance(r["mfu"], float)]
print(f"tokens/s: {tps:,.0f} (median of {len(steady)} steps); final loss {records[-1].get('loss')}")
if mfus:
    print(f"RESULT gpu_mfu={statistics.median(mfus):.3f} goal>=0.50")
else:
    print("MFU: unknown (this GPU is not in training/metrics.py's peak-FLOPs table)")
EOF
