"""Hugging Face GPT-2 format, both ways: export our model for `transformers.GPT2LMHeadModel`, import any GPT-2
checkpoint in that format to start from.

Our parameter names are Hugging Face's; the only difference is that their attention and MLP projections are
`Conv1D` layers, which store the weight transposed (in_features, out_features). Padding rows of the embedding
are dropped on export. A config key that would make `transformers` compute something our model does not is
either carried into our config (`HF_VARIANTS`) or refused with an error naming it: an import never builds a
different model silently. Weights are written as safetensors and read from safetensors or, for older checkpoints,
`pytorch_model.bin` with `torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import WebtextError
from pipeline.tokenizer import ENDOFTEXT, GPT2_EOT
from training.model import GPT, GPTConfig

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT-2 tokenizer files as OpenAI published them -> the names Hugging Face's GPT2Tokenizer reads.
TOKENIZER_FILES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}
# The weights `import_hf` reads, in the order it looks for them: one safetensors file, sharded safetensors (their
# index names the shards), or an older checkpoint's pickle-free-loaded `pytorch_model.bin`.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


# Hugging Face GPT2Config key -> our GPTConfig field, and GPT-2's value of it.
HF_VARIANTS = {
    "tie_word_embeddings": ("tie_word_embeddings", True),
    "layer_norm_epsilon": ("layer_norm_eps", 1e-5),
    "scale_attn_by_inverse_layer_idx": ("scale_attn_by_inverse_layer_idx", False),
    "reorder_and_upcast_attn": ("upcast_attn", False),
}


class HFFormatError(WebtextError, ValueError):
    """A directory that is not a GPT-2 checkpoint we can read; the message names the file."""

    hint = ("give a Hugging Face GPT-2 directory (config.json with model_type gpt2, and model.safetensors or "
            "pytorch_model.bin), such as one `webtext export` writes, or one of our run directories")


def hf_config(config: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        **{key: getattr(config, ours) for key, (ours, _) in HF_VARIANTS.items()},
        "bos_token_id": GPT2_EOT,
        "eos_token_id": GPT2_EOT,
        "torch_dtype": "float32",
    }


def export_hf(model_or_state: GPT | dict, config: GPTConfig, out_dir: str | Path,
              tokenizer_dir: str | Path | None = None) -> Path:
    """Write `model.safetensors`, `config.json` and, given the directory holding OpenAI's `encoder.json` and
    `vocab.bpe`, the tokenizer files. Takes a model or its (consolidated, full) state dict."""
    if config.objective != "clm":
        raise HFFormatError("only causal-LM (objective: clm) models export to GPT2LMHeadModel")
    state = model_or_state.state_dict() if isinstance(model_or_state, GPT) else model_or_state
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to transformer.wte.weight; transformers re-ties it on load
        tensor = tensor.detach().to(torch.float32)
        if name in ("transformer.wte.weight", "lm_head.weight"):
            tensor = tensor[: config.vocab_size]
        if name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": GPT2_EOT, "eos_token_id": GPT2_EOT}, indent=2) + "\n")
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), out, config.block_size)
    return out


def _copy_tokenizer(src: Path, out: Path, block_size: int) -> None:
    for theirs, ours in TOKENIZER_FILES.items():
        if not (src / theirs).is_file():
            raise FileNotFoundError(f"{src / theirs}: GPT-2 tokenizer file not found")
        shutil.copyfile(src / theirs, out / ours)
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": block_size,
        "bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT,
        "add_prefix_space": False,
    }, indent=2) + "\n")


def _read_weights(src: Path) -> dict[str, torch.Tensor]:
    if (src / "model.safetensors").is_file():
        return load_file(str(src / "model.safetensors"))
    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for name in files:
            state.update(load_file(str(src / name)))
        return state
    if (src / "pytorch_model.bin").is_file():
        return torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise HFFormatError(f"{src}: no {', '.join(WEIGHT_FILES[:-1])} or {WEIGHT_FILES[-1]}")


def import_hf(src_dir: str | Path, **overrides) -> GPT:
    """Build our GPT from a Hugging Face GPT-2 directory (e.g. an export, or OpenAI's gpt2 weights)."""
    src = Path(src_dir)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise HFFormatError(f"{config_path}: not found")
    hf = json.loads(config_path.read_text())
    if hf.get("model_type") != "gpt2":
        raise HFFormatError(f"{config_path}: model_type {hf.get('model_type')!r} is not 'gpt2'")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise HFFormatError(f"{config_path}: activation {hf['activation_function']!r}; GPT-2 uses gelu_new")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise HFFormatError(f"{config_path}: n_inner {hf['n_inner']} is not 4 x n_embd")
    for key, supported in (("scale_attn_weights", True), ("add_cross_attention", False)):
        if hf.get(key, supported) != supported:
            raise HFFormatError(f"{config_path}: {key} {hf[key]!r} is not supported (only {supported!r})")
    variants = {ours: hf.get(key, default) for key, (ours, default) in HF_VARIANTS.items()}
    config = GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                       block_size=hf["n_positions"], vocab_size=hf["vocab_size"], **variants, **overrides)
    model = GPT(config)
    state = {}
    for name, tensor in _read_weights(src).items():
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # OpenAI's original upload has no "transformer." prefix
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of old transformers versions
        if name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        state[name] = tensor.to(torch.float32)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    elif "lm_head.weight" not in state:
        raise HFFormatError(f"{src}: tie_word_embeddings is false but the weights have no lm_head.weight")
    for name in ("transformer.wte.weight", "lm_head.weight"):  # our padding rows keep their init
        ours = model.get_parameter(name)
        if state[name].shape[0] < ours.shape[0]:
            padded = ours.detach().clone()
            padded[: config.vocab_size] = state[name]
            state[name] = padded
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HFFormatError(f"{src}: weights do not match GPT-2 (missing {missing}, unexpected {unexpected})")
    return model
