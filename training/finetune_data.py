"""Fine-tuning data: JSONL examples for completion, QA and dialogue, the chat template, and tokenisation with a
loss mask on the answer spans only.

Formats (one JSON object per line; the keys say which):
- completion: `{"prompt": str, "completion": str}`
- QA: `{"question": str, "context": str (optional), "answer": str}`
- dialogue: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`
A line that is not one of them is an error naming the file and line (`FinetuneDataError`).

The chat template is plain text, not new special tokens. GPT-2's vocabulary has no chat tokens; new ones would
start as untrained rows of the embedding (and of the tied head), would need the Hugging Face export's tokenizer
and our tiktoken encoder to learn them, and would be unreadable to anything that only knows GPT-2. Plain-text
headers (`### User:`) are tokens the pretrained model already models, the HF export is unchanged, and a transcript
is readable text. The one special token used is GPT-2's own `<|endoftext|>` (50256), ending every assistant turn:
it is the end-of-turn marker, a single id that no text encodes to (`encode_ordinary` turns the literal string
into ordinary tokens), and the export's `eos_token_id`, so Hugging Face's `generate` stops at end of turn too.
The template is saved with the run (`webtext_chat_template.json`) and read back by generation.

Each part of an example is encoded on its own and the ids concatenated, so the answer span is exactly known:
loss (a target in y) only on the completion, the answer and each assistant turn, each with its end-of-turn token.
Prompts, contexts, questions, system and user turns, headers and padding have target IGNORE_INDEX. An example
with no target is an error. Each example is one row of `seq_len` (right padded): no packing, so no example ever
attends to another. An example longer than `seq_len + 1` tokens is an error, or with `too_long="drop"` is
dropped with its reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import WebtextError
from pipeline.tokenizer import ENDOFTEXT, GPT2_EOT
from training.model import IGNORE_INDEX
from training.sampler import EpochSampler

ROLES = ("system", "user", "assistant")
TEMPLATE_FILE = "webtext_chat_template.json"  # not chat_template.json, which transformers reads as Jinja


class FinetuneDataError(WebtextError, ValueError):
    """A fine-tuning example that cannot be used; the message starts with `FILE:LINE:`."""

    hint = ("fix or drop that example (one JSON object a line: prompt + completion, question + answer (+ context), "
            "or messages with roles system/user/assistant), then rerun")


@dataclass(frozen=True)
class ChatTemplate:
    """How examples become text. Headers are plain text; every answer span ends with `<|endoftext|>`."""

    name: str = "webtext-plain-v1"
    system_header: str = "### System:\n"
    user_header: str = "### User:\n"
    assistant_header: str = "### Assistant:\n"
    turn_separator: str = "\n\n"  # after a system or user turn (an assistant turn ends with the end-of-turn token)
    end_of_turn: str = ENDOFTEXT
    end_of_turn_id: int = GPT2_EOT
    qa_context: str = "Context: {context}\n"
    qa_question: str = "Question: {question}\nAnswer:"
    qa_answer: str = " {answer}"

    def header(self, role: str) -> str:
        return {"system": self.system_header, "user": self.user_header, "assistant": self.assistant_header}[role]

    def markers(self) -> tuple[str, ...]:
        return (self.system_header.strip(), self.user_header.strip(), self.assistant_header.strip(), self.end_of_turn)

    # Each method returns the example as (text, is_answer) pieces; `None` text stands for the end-of-turn token.
    def completion_pieces(self, prompt: str, completion: str) -> list[tuple[str | None, bool]]:
        return [(prompt, False), (completion, True), (None, True)]

    def qa_prompt(self, question: str, context: str | None = None) -> str:
        text = self.qa_context.format(context=context) if context else ""
        return text + self.qa_question.format(question=question)

    def qa_pieces(self, question: str, answer: str, context: str | None = None) -> list[tuple[str | None, bool]]:
        return [(self.qa_prompt(question, context), False), (self.qa_answer.format(answer=answer), True), (None, True)]

    def dialogue_pieces(self, messages: list[dict]) -> list[tuple[str | None, bool]]:
        pieces: list[tuple[str | None, bool]] = []
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "assistant":
                pieces += [(self.assistant_header, False), (content, True), (None, True)]
            else:
                pieces.append((self.header(role) + content + self.turn_separator, False))
        return pieces

    def chat_prompt(self, messages: list[dict]) -> str:
        """The text that asks the model for the next assistant turn (history rendered, assistant header open)."""
        return render_text(self.dialogue_pieces(messages), self) + self.assistant_header

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TEMPLATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ChatTemplate:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (TypeError, json.JSONDecodeError) as err:
            raise FinetuneDataError(f"{path}: not a chat template: {err}") from None


def render_text(pieces: list[tuple[str | None, bool]], template: ChatTemplate) -> str:
    return "".join(template.end_of_turn if text is None else text for text, _ in pieces)


@dataclass
class Example:
    """One validated record: its format, its pieces, and where it came from (`file:line`)."""

    kind: str  # "completion", "qa" or "dialogue"
    record: dict
    source: str
    pieces: list = field(default_factory=list)


@dataclass
class TokenizedExample:
    tokens: list[int]
    is_answer: list[bool]  # per token: does it belong to an answer span (and so is a target)?
    example: Example


def _string(record: dict, key: str, where: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise FinetuneDataError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise FinetuneDataError(f"{where}: {key!r} is empty")
    return value


def parse_record(record, where: str, template: ChatTemplate) -> Example:
    """Validate one JSON value as an example of one of the three formats."""
    if not isinstance(record, dict):
        raise FinetuneDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    keys = set(record)
    if "messages" in keys:
        kind, allowed = "dialogue", {"messages"}
    elif "question" in keys or "answer" in keys:
        kind, allowed = "qa", {"question", "context", "answer"}
    elif "prompt" in keys or "completion" in keys:
        kind, allowed = "completion", {"prompt", "completion"}
    else:
        raise FinetuneDataError(f"{where}: no known keys (completion: prompt, completion; QA: question, context, "
                                f"answer; dialogue: messages); got {sorted(keys)}")
    if keys - allowed:
        raise FinetuneDataError(f"{where}: unexpected key(s) {sorted(keys - allowed)} in a {kind} example "
                                f"(allowed: {sorted(allowed)})")
    if kind == "completion":
        pieces = template.completion_pieces(_string(record, "prompt", where), _string(record, "completion", where))
    elif kind == "qa":
        pieces = template.qa_pieces(_string(record, "question", where), _string(record, "answer", where),
                                    _string(record, "context", where, required=False))
    else:
        pieces = template.dialogue_pieces(check_messages(record["messages"], where, template))
    return Example(kind, record, where, pieces)


def check_messages(messages, where: str, template: ChatTemplate) -> list[dict]:
    """`messages` if they make a dialogue example (roles, system first, no template marker in a content, an
    assistant turn to learn), else a FinetuneDataError naming `where` and the message."""
    if not isinstance(messages, list) or not messages:
        raise FinetuneDataError(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise FinetuneDataError(f"{at}: must be an object with exactly 'role' and 'content'")
        if message["role"] not in ROLES:
            raise FinetuneDataError(f"{at}: role {message['role']!r} is not one of {', '.join(ROLES)}")
        if message["role"] == "system" and i != 0:
            raise FinetuneDataError(f"{at}: a system message may only come first")
        content = _string(message, "content", at)
        for marker in template.markers():
            if marker in content:
                raise FinetuneDataError(f"{at}: content contains the template marker {marker!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise FinetuneDataError(f"{where}: no assistant message, so nothing to learn (empty loss mask)")
    return messages


def read_jsonl(path: str | Path, template: ChatTemplate) -> list[Example]:
    """Every example of a JSONL file; blank lines are skipped; any bad line raises naming `path:line`."""
    examples = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: fine-tuning data file not found") from None
    except UnicodeDecodeError as err:
        raise FinetuneDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise FinetuneDataError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
        examples.append(parse_record(record, where, template))
    if not examples:
        raise FinetuneDataError(f"{path}: no examples")
    return examples


def tokenize_example(example: Example, encoding, template: ChatTemplate) -> TokenizedExample:
    tokens: list[int] = []
    is_answer: list[bool] = []
    for text, answer in example.pieces:
        ids = [template.end_of_turn_id] if text is None else encoding.encode_ordinary(text)
        tokens += ids
        is_answer += [answer] * len(ids)
    # The first token is never a target (nothing precedes it), so an answer must have a token after it.
    if not any(is_answer[1:]):
        raise FinetuneDataError(f"{example.source}: the loss mask is empty (no answer token)")
    return TokenizedExample(tokens, is_answer, example)


def to_row(tokenized: TokenizedExample, seq_len: int, pad_id: int = GPT2_EOT) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of length seq_len: y[i] = tokens[i+1] where that token is in an answer span, else IGNORE_INDEX;
    padding on the right has x = pad_id and y = IGNORE_INDEX."""
    tokens = tokenized.tokens
    if len(tokens) > seq_len + 1:
        raise FinetuneDataError(f"{tokenized.example.source}: {len(tokens)} tokens, longer than seq_len + 1 = "
                                f"{seq_len + 1}")
    x = np.full(seq_len, pad_id, dtype=np.int32)
    y = np.full(seq_len, IGNORE_INDEX, dtype=np.int32)
    n = len(tokens) - 1
    x[:n] = tokens[:-1]
    targets = np.asarray(tokens[1:], dtype=np.int32)
    y[:n] = np.where(np.asarray(tokenized.is_answer[1:], dtype=bool), targets, IGNORE_INDEX)
    return x, y


def is_validation(example: Example, val_fraction: float) -> bool:
    """A stable split: by a hash of the record, so adding examples never moves existing ones between splits."""
    digest = hashlib.sha256(json.dumps(example.record, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


@dataclass
class PreparedSplit:
    inputs: np.ndarray  # (N, seq_len) int32
    targets: np.ndarray  # (N, seq_len) int32, IGNORE_INDEX where no loss
    examples: list[Example]

    def save(self, path: Path) -> Path:
        np.savez(path, inputs=self.inputs, targets=self.targets)
        return path


def prepare(files: list[str], seq_len: int, encoding, template: ChatTemplate, val_fraction: float = 0.1,
            val_files: list[str] = (), too_long: str = "error") -> tuple[PreparedSplit, PreparedSplit, list[dict]]:
    """Read, validate, tokenise and split. Returns (train, val, rejected) where rejected lists the examples
    dropped for length, each with its source and reason."""
    splits: dict[str, list] = {"train": [], "val": []}
    rejected: list[dict] = []
    sources = [(f, None) for f in files] + [(f, "val") for f in val_files]
    for path, forced in sources:
        for example in read_jsonl(path, template):
            tokenized = tokenize_example(example, encoding, template)
            if len(tokenized.tokens) > seq_len + 1 and too_long == "drop":
                rejected.append({"source": example.source, "reason": "longer_than_seq_len",
                                 "tokens": len(tokenized.tokens), "record": example.record})
                continue
            split = forced or ("val" if (not val_files and is_validation(example, val_fraction)) else "train")
            splits[split].append(tokenized)
    out = []
    for name in ("train", "val"):
        rows = [to_row(t, seq_len) for t in splits[name]]
        inputs = np.stack([r[0] for r in rows]) if rows else np.zeros((0, seq_len), np.int32)
        targets = np.stack([r[1] for r in rows]) if rows else np.zeros((0, seq_len), np.int32)
        out.append(PreparedSplit(inputs, targets, [t.example for t in splits[name]]))
    return out[0], out[1], rejected


class ExampleBatches:
    """The training loop's loader over prepared examples (`.npz` files written by `prepare`), with the interface
    of `training.data.TokenWindows` and its sampler (`training.sampler.EpochSampler`): each epoch a permutation of
    the examples cut into global steps of B x W, a global cursor that resumes exactly; if N < B x W the permutation
    is repeated to fill one step."""

    def __init__(self, paths: list[str], batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0):
        inputs, targets = [], []
        for path in paths:
            with np.load(path) as data:
                if data["inputs"].shape[1] != seq_len:
                    raise ValueError(f"{path}: prepared for seq_len {data['inputs'].shape[1]}, not {seq_len}")
                inputs.append(data["inputs"])
                targets.append(data["targets"])
        self.inputs, self.targets = np.concatenate(inputs), np.concatenate(targets)
        if len(self.inputs) == 0:
            raise ValueError(f"{', '.join(map(str, paths))}: no examples")
        self.fingerprint = hashlib.sha256(self.inputs.tobytes() + self.targets.tobytes()).hexdigest()[:16]
        self.sampler = EpochSampler(len(self.inputs), batch_size, rank, world_size, seed)

    def next_batch(self):
        import torch

        mine = self.sampler.next_ids()
        x = torch.from_numpy(self.inputs[mine].astype(np.int64))
        y = torch.from_numpy(self.targets[mine].astype(np.int64))
        return x, y

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "data": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state["data"] != self.fingerprint:
            raise ValueError(f"fine-tuning loader state: data was {state['data']!r}, this loader has "
                             f"{self.fingerprint!r}")
        self.sampler.load_state_dict(state)
