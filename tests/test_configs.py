"""The example configs in configs/ load, and state the defaults they claim to state."""

from pathlib import Path

from pipeline.config import load_config
from pipeline.urls import UrlsConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_urls_config_lists_the_defaults():
    assert load_config(UrlsConfig, CONFIGS / "urls.yaml") == UrlsConfig()


def test_build_corpus_config_is_webtext():
    from jobs.build_corpus import CorpusConfig

    config = load_config(CorpusConfig, CONFIGS / "build_corpus.yaml")
    assert (config.urls.min_karma, config.filter.min_tokens, config.dedup.threshold) == (3, 128, 0.5)
    assert config == CorpusConfig()  # it states defaults, not changes
