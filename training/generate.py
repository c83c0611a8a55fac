"""Sampling from a GPT-2 model: temperature, top-k, top-p (nucleus), greedy, a seed, a stop token, batched prompts
(left padded, with an attention mask so padding is never attended to and positions count real tokens only), and a
KV cache so each new token costs one position, not the whole prefix. Greedy decoding gives the same tokens with and
without the cache (tests/training/test_generate.py).

Models load from whatever `training.resolve` resolves (our run, its `checkpoints/` or one `step_*` directory, or a
Hugging Face GPT-2 directory; local or at a URI), on CPU or GPU. The chat template saved with a fine-tuned run
(`webtext_chat_template.json`) is found next to the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.tokenizer import GPT2_EOT
from training.finetune_data import TEMPLATE_FILE, ChatTemplate, check_messages
from training.model import GPT, KVCache


@dataclass
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy (argmax)
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_ids: tuple[int, ...] = (GPT2_EOT,)
    use_cache: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Logits with the tokens outside the top k and outside the smallest set of probability >= top_p set to -inf
    (the most likely token always stays)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(model: GPT, prompts: list[list[int]], sampling: Sampling) -> list[list[int]]:
    """The new tokens for each prompt (token ids), up to and excluding a stop token. Prompts of different lengths
    are left padded in one batch. Generation ends at a stop token, `max_new_tokens`, or the model's block size."""
    if model.config.objective != "clm":
        raise ValueError("generation needs a causal LM (objective: clm)")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    model.eval()
    longest = max(len(p) for p in prompts)
    if longest > model.config.block_size:
        raise ValueError(f"a prompt of {longest} tokens is longer than block_size {model.config.block_size}")
    pad = GPT2_EOT if GPT2_EOT < model.config.vocab_size else 0  # any id: padding is masked out
    idx = torch.tensor([[pad] * (longest - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
    padded = bool((mask == 0).any())
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    stop = torch.tensor(sampling.stop_ids, dtype=torch.long, device=device)
    B = len(prompts)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    new_tokens: list[torch.Tensor] = []
    cache = KVCache(model.config.n_layer) if sampling.use_cache else None
    step_input = idx
    for _ in range(min(sampling.max_new_tokens, model.config.block_size - longest)):
        if cache is not None:
            logits, _ = model(step_input, kv_cache=cache, attention_mask=mask if padded else None)
        else:
            logits, _ = model(idx, attention_mask=mask if padded else None)
        token = next_tokens(logits[:, -1, :], sampling, generator)
        token = torch.where(done, torch.full_like(token, pad), token)  # a finished row only pads
        new_tokens.append(token)
        done |= torch.isin(token, stop)
        if bool(done.all()):
            break
        idx = torch.cat([idx, token[:, None]], dim=1)
        if padded:
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], dim=1)
        step_input = token[:, None]
    rows = torch.stack(new_tokens, dim=1).tolist() if new_tokens else [[] for _ in range(B)]
    stops = set(sampling.stop_ids)
    return [row[: next((i for i, t in enumerate(row) if t in stops), len(row))] for row in rows]


def generate_text(model: GPT, encoding, prompts: list[str], sampling: Sampling) -> list[str]:
    ids = generate_ids(model, [encoding.encode_ordinary(p) for p in prompts], sampling)
    return [encoding.decode(t) for t in ids]


def chat_prompt(template: ChatTemplate, messages: list[dict], where: str = "messages") -> str:
    """The text asking for the next assistant turn after `messages`, which are checked as training dialogues are
    (bar the assistant turn still to come): a FinetuneDataError names `where` and the message."""
    check_messages(messages + [{"role": "assistant", "content": "-"}], where, template)
    return template.chat_prompt(messages)


def chat_sampling(template: ChatTemplate, sampling: Sampling) -> Sampling:
    """`sampling` that also stops at the template's end-of-turn token."""
    stops = tuple(dict.fromkeys((template.end_of_turn_id, *sampling.stop_ids)))
    return Sampling(**{**sampling.__dict__, "stop_ids": stops})


def chat_reply(model: GPT, encoding, template: ChatTemplate, messages: list[dict], sampling: Sampling) -> str:
    """The next assistant turn after `messages`, stopping at the template's end-of-turn token."""
    return generate_text(model, encoding, [chat_prompt(template, messages)], chat_sampling(template, sampling))[0]


def load_model(source: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, ChatTemplate | None]:
    """A model for sampling from anything `training.resolve.resolve` takes (our run or checkpoint, a Hugging Face
    GPT-2 directory, local or at a URI); and its chat template if one was saved with it."""
    from training import resolve

    resolved = resolve.resolve(source)
    model = resolve.load_model(resolved)
    template = None
    for directory in (resolved.path, resolved.run_dir or resolved.path.parent):
        if (directory / TEMPLATE_FILE).is_file():
            template = ChatTemplate.load(directory / TEMPLATE_FILE)
            break
    return model.to(device).eval(), template
