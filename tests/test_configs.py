"""Every config in configs/ loads into its typed config and says what it claims: a stage's file, and
build_corpus.yaml, list the defaults (every key with its default and what it means); a training file is the run its
comments describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.crawl import CrawlConfig
from pipeline.dedup import DedupConfig
from pipeline.extract import ExtractConfig
from pipeline.filter import FilterConfig
from pipeline.tokenize import TokenizeConfig
from pipeline.urls import UrlsConfig
from tests.helpers import CONFIGS


def stage_defaults(model):
    def check(path: Path, capsys) -> None:
        assert load_config(model, path) == model()
    return check


def build_corpus(path: Path, capsys) -> None:
    from jobs.build_corpus import CorpusConfig

    config = load_config(CorpusConfig, path)
    assert (config.urls.min_karma, config.filter.min_tokens, config.dedup.threshold) == (3, 128, 0.5)
    assert config == CorpusConfig()  # it states defaults, not changes


def pretrain_dry_run(path: Path, capsys) -> dict:
    from jobs.cli import main

    assert main(["pretrain", "--config", str(path), "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def pretrain_tiny(path: Path, capsys) -> None:
    assert pretrain_dry_run(path, capsys)["deepspeed"]["train_batch_size"] == 16


def pretrain_gpt2(path: Path, capsys) -> None:
    out = pretrain_dry_run(path, capsys)
    assert out["deepspeed"]["train_batch_size"] == 512
    # GPT-2 124M: OpenAI's count without the padding rows; 47 rows of 768 more with the vocabulary padded to 50304.
    assert out["parameters_without_vocab_padding"] == 124_439_808
    assert out["parameters"] == 124_439_808 + 47 * 768


def finetune_tiny(path: Path, capsys) -> None:
    from training.finetune import FinetuneConfig

    cfg = load_config(FinetuneConfig, path)
    assert cfg.launch.launcher == "ray" and cfg.finetune.too_long == "error"
    assert cfg.check_batch() == (8, 1, 16)


CHECKS = {
    "urls": stage_defaults(UrlsConfig),
    "crawl": stage_defaults(CrawlConfig),
    "extract": stage_defaults(ExtractConfig),
    "filter": stage_defaults(FilterConfig),
    "dedup": stage_defaults(DedupConfig),
    "tokenize": stage_defaults(TokenizeConfig),
    "build_corpus": build_corpus,
    "pretrain_tiny": pretrain_tiny,
    "pretrain_gpt2": pretrain_gpt2,
    "finetune_tiny": finetune_tiny,
}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_file_loads_and_states_what_it_claims(path, capsys):
    assert path.stem in CHECKS, f"{path.name}: no check here says what it claims; add one to CHECKS"
    CHECKS[path.stem](path, capsys)


def test_every_check_has_its_config_file():
    assert sorted(CHECKS) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
