"""GPT-2, the whole network in one file: embeddings, pre-LayerNorm blocks, final LayerNorm, tied LM head.

A few switches exist only so that GPT-2 variants published in Hugging Face's format import exactly
(training/hf.py): an untied LM head, another LayerNorm epsilon, attention scores scaled down by the layer's
depth and computed in fp32 (Mistral's GPT-2 models). Their defaults are GPT-2's.

Follows the GPT-2 paper (Radford et al., 2019) and nanoGPT's layout. No parallelism lives here: the DeepSpeed
engine (`training/engine.py`) wraps this module as it is. Parameter names match Hugging Face's `GPT2LMHeadModel`
(`transformer.h.0.attn.c_attn.weight`, ...), so `training/hf.py` only transposes the Conv1D weights.

Two objectives share the network: `clm` (next-token prediction with causal attention, GPT-2's) and `mlm`
(masked-language modelling with bidirectional attention, BERT's recipe of 15 % of positions, 80/10/10).

For sampling (`training/generate.py`), `GPT.forward` optionally takes a `KVCache` (keys and values of the positions
already seen, extended in place) and an `attention_mask` (1 = token, 0 = left padding of a batched prompt). Without
them the forward pass is the training one, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipeline.tokenizer import GPT2_N_VOCAB

IGNORE_INDEX = -100  # targets with this value carry no loss (F.cross_entropy's default ignore_index)

# (n_layer, n_head, n_embd). The four GPT-2 sizes are the paper's; `tiny` is for CPU tests.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 4, 64),
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}


@dataclass
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = GPT2_N_VOCAB  # tokens the model may emit
    pad_vocab_to: int = 1  # embedding rows rounded up to a multiple of this (64 is faster on GPUs)
    dropout: float = 0.0
    objective: str = "clm"  # "clm" or "mlm"
    activation_checkpointing: bool = False  # recompute each block in the backward pass to save memory
    tie_word_embeddings: bool = True  # the LM head is the token embedding matrix
    layer_norm_eps: float = 1e-5
    scale_attn_by_inverse_layer_idx: bool = False  # attention scores of layer i also scaled by 1 / (i + 1)
    upcast_attn: bool = False  # attention computed in fp32 whatever the precision (HF: reorder_and_upcast_attn)

    @classmethod
    def named(cls, size: str, **overrides) -> GPTConfig:
        n_layer, n_head, n_embd = SIZES[size]
        return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, **overrides)

    @property
    def embedding_rows(self) -> int:
        # mlm needs one extra row for its [MASK] input token, which is never a prediction target.
        rows = self.vocab_size + (1 if self.objective == "mlm" else 0)
        return math.ceil(rows / self.pad_vocab_to) * self.pad_vocab_to

    @property
    def padding_params(self) -> int:
        """Parameters in the padding rows of the embedding (and of an untied head)."""
        rows = self.embedding_rows - self.vocab_size - (1 if self.objective == "mlm" else 0)
        return rows * self.n_embd * (1 if self.tie_word_embeddings else 2)

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.causal = config.objective == "clm"
        self.scale = (config.n_embd // config.n_head) ** -0.5  # scaled dot product
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1
        self.upcast = config.upcast_attn
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, layer_cache: list | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if layer_cache is not None:  # [keys, values] of the earlier positions, extended in place
            if layer_cache:
                k, v = torch.cat([layer_cache[0], k], dim=2), torch.cat([layer_cache[1], v], dim=2)
            layer_cache[:] = [k, v]
        if self.upcast:
            q, k, v = q.float(), k.float(), v.float()
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=self.causal and attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )
        y = y.to(x.dtype).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        # GPT-2 used the tanh approximation of GELU; keeping it makes Hugging Face's weights give the same logits.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: LayerNorm at the input of each sub-block, a residual around each."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, layer_cache: list | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer_cache, attn_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """Keys and values of every layer for the positions a model has already seen, for sampling one token at a
    time without recomputing the prefix. `GPT.forward(..., kv_cache=cache)` reads and extends it."""

    def __init__(self, n_layer: int):
        self.layers: list[list] = [[] for _ in range(n_layer)]

    def __len__(self) -> int:
        """Positions held (padding included)."""
        return self.layers[0][0].size(2) if self.layers[0] else 0


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.objective not in ("clm", "mlm"):
            raise ValueError(f"objective must be 'clm' or 'mlm', got {config.objective!r}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.embedding_rows, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps),  # GPT-2: a LayerNorm after the last block
        ))
        self.lm_head = nn.Linear(config.n_embd, config.embedding_rows, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix embeds and un-embeds

        self.apply(self._init_weights)
        # GPT-2 paper: scale the weights of residual layers at initialization by 1/sqrt(N), N = 2 per block.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the tied matrix counts once, and position embeddings are left out by default."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None):
        """(logits, loss). Without targets: logits (B, T, vocab_size) over the real tokens (padding rows are never
        emitted) and no loss. With targets: the mean loss over the targets not equal to IGNORE_INDEX, and the logits
        (N, vocab_size) of just those N positions, in row-major order.

        Sampling only: `kv_cache` holds the earlier positions (idx continues them); `attention_mask` (B, past + T)
        marks real tokens 1 and padding 0, so no token attends to padding and positions count real tokens only."""
        B, T = idx.shape
        past = len(kv_cache) if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size {self.config.block_size}")
        attn_mask = None
        if attention_mask is None:
            pos = torch.arange(past, past + T, device=idx.device)
        else:
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        if past or attention_mask is not None:
            attn_mask = self._attention_mask(B, past, T, attention_mask, idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if kv_cache is not None or attn_mask is not None:
                x = block(x, kv_cache.layers[i] if kv_cache is not None else None, attn_mask)
            elif self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x)[..., : self.config.vocab_size], None
        # The head is the largest matmul of a small model: run it only where a target is (fine-tuning masks every
        # prompt, MLM all but 15 % of the positions), which gives the same loss and gradients.
        scored = targets != IGNORE_INDEX
        logits = self.lm_head(x[scored])[..., : self.config.vocab_size]
        return logits, F.cross_entropy(logits.float(), targets[scored])

    def _attention_mask(self, B: int, past: int, T: int, attention_mask: torch.Tensor | None, device):
        """(B, 1, T, past + T) booleans, True where query i (at position past + i) may attend to key j."""
        q = torch.arange(past, past + T, device=device)[:, None]
        k = torch.arange(past + T, device=device)[None, :]
        allowed = (k <= q) if self.causal_lm else torch.ones(T, past + T, dtype=torch.bool, device=device)
        allowed = allowed[None, None].expand(B, 1, T, past + T)
        if attention_mask is not None:
            # A padding query still sees itself, so its softmax has a term and no NaN reaches later layers.
            allowed = (allowed & attention_mask.bool()[:, None, None, :]) | (k == q)[None, None]
        return allowed

    @property
    def causal_lm(self) -> bool:
        return self.config.objective == "clm"

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), attention included (PaLM appendix B)."""
        c = self.config
        n = self.num_params(non_embedding=True)
        return 6 * n + 12 * c.n_layer * c.n_embd * seq_len


def mask_for_mlm(tokens: torch.Tensor, config: GPTConfig, generator: torch.Generator,
                 probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: choose `probability` of the positions as targets; of those, 80 % become [MASK],
    10 % a random token, 10 % stay. Returns (inputs, targets) with IGNORE_INDEX where there is no target."""
    chosen = torch.rand(tokens.shape, generator=generator) < probability
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    roll = torch.rand(tokens.shape, generator=generator)
    random_tokens = torch.randint(config.vocab_size, tokens.shape, generator=generator, dtype=tokens.dtype)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(tokens, config.mask_token_id), tokens)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
    return inputs, targets
