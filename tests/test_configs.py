"""The example configs in configs/ load, and state the defaults they claim to state."""

from pathlib import Path

from pipeline.config import load_config
from pipeline.urls import UrlsConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_urls_config_lists_the_defaults():
    assert load_config(UrlsConfig, CONFIGS / "urls.yaml") == UrlsConfig()
