"""Document quality rules in the style of Gopher (Rae et al. 2021, appendix A) and C4 (Raffel et al. 2020).

Each rule has a name, which is the reject reason, and a threshold in `QualityConfig`; `None` turns a rule off.
`TextStats` measures a text once; `first_failure` returns the first rule it breaks, with what was measured.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from pydantic import Field

from pipeline.config import Config
from pipeline.records import Reject

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
BULLETS = ("•", "●", "○", "▪", "■", "◦", "‣", "⁃", "-", "*", "–", "—", "·")
ELLIPSES = ("...", "…")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", ")", ":")
# Gopher's stop-word rule: an English document has at least two of these.
STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
# C4 and Gopher boilerplate: lines of cookie banners, legal notices, script warnings.
DEFAULT_BOILERPLATE = (
    "javascript", "cookie", "privacy policy", "terms of use", "terms of service", "all rights reserved",
    "sign up for", "subscribe to", "log in to", "click here", "enable cookies", "your browser",
)


class QualityConfig(Config):
    """Thresholds of the quality rules (Gopher's published values where it has one); None disables a rule."""

    min_words: int | None = Field(50, description="Gopher: fewer than 50 words")
    max_words: int | None = Field(100_000, description="Gopher: more than 100,000 words")
    min_mean_word_length: float | None = Field(3.0, description="Gopher: mean word length outside 3..10")
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = Field(0.1, description="Gopher: '#' and ellipses per word")
    max_bullet_lines: float | None = Field(0.9, description="Gopher: share of lines starting with a bullet")
    max_ellipsis_lines: float | None = Field(0.3, description="Gopher: share of lines ending in an ellipsis")
    min_alpha_words: float | None = Field(0.8, description="Gopher: share of words with a letter")
    min_stop_words: int | None = Field(2, description="Gopher: English stop words present (en documents only)")
    min_terminal_punctuation_lines: float | None = Field(
        0.2, description="C4 keeps lines ending in punctuation; here: share of lines that do (0.4 dropped 10 of "
        "158 English scrapinghub articles, 0.2 drops 2)")
    max_boilerplate_lines: float | None = Field(0.3, description="C4: share of lines with boilerplate phrases")
    boilerplate_phrases: list[str] = list(DEFAULT_BOILERPLATE)
    drop_lorem_ipsum: bool = Field(True, description="C4: placeholder text")
    drop_curly_brace: bool = Field(False, description="C4 drops any '{' (code); off: it drops programming pages")
    max_duplicate_lines: float | None = Field(0.3, description="Gopher: share of lines that repeat another line")
    max_duplicate_line_chars: float | None = Field(0.2, description="Gopher: share of characters in repeated lines")


@dataclass
class TextStats:
    n_words: int
    mean_word_length: float
    symbol_word_ratio: float
    bullet_lines: float
    ellipsis_lines: float
    alpha_words: float
    stop_words: int
    terminal_punctuation_lines: float
    boilerplate_lines: float
    duplicate_lines: float
    duplicate_line_chars: float
    lorem_ipsum: bool
    curly_brace: bool

    @classmethod
    def of(cls, text: str, boilerplate: tuple[str, ...] = DEFAULT_BOILERPLATE) -> TextStats:
        words = _WORD.findall(text)
        n_words = len(words)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        n_lines = max(len(lines), 1)
        lower_lines = [line.lower() for line in lines]
        line_counts = Counter(lines)
        repeated = [line for line in lines if line_counts[line] > 1]
        duplicate_chars = sum(len(line) * (n - 1) for line, n in line_counts.items() if n > 1)
        lower = text.lower()
        symbols = text.count("#") + sum(text.count(e) for e in ELLIPSES)
        return cls(
            n_words=n_words,
            mean_word_length=sum(len(w) for w in words) / n_words if n_words else 0.0,
            symbol_word_ratio=symbols / n_words if n_words else 0.0,
            bullet_lines=sum(line.startswith(BULLETS) for line in lines) / n_lines,
            ellipsis_lines=sum(line.endswith(ELLIPSES) for line in lines) / n_lines,
            alpha_words=sum(bool(_ALPHA.search(w)) for w in words) / n_words if n_words else 0.0,
            stop_words=len(STOP_WORDS.intersection(w.lower() for w in words)),
            terminal_punctuation_lines=sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / n_lines,
            boilerplate_lines=sum(any(p in line for p in boilerplate) for line in lower_lines) / n_lines,
            duplicate_lines=(len(repeated) - len(set(repeated))) / n_lines,
            duplicate_line_chars=duplicate_chars / max(len(text), 1),
            lorem_ipsum="lorem ipsum" in lower,
            curly_brace="{" in text,
        )


def first_failure(stats: TextStats, config: QualityConfig, lang: str | None) -> Reject | None:
    """The first rule the text breaks (its name, and what was measured against what), or None."""
    c = config

    def below(name: str, value: float, minimum: float | None) -> Reject | None:
        return Reject(name, f"{value:.3g}<{minimum}") if minimum is not None and value < minimum else None

    def above(name: str, value: float, maximum: float | None) -> Reject | None:
        return Reject(name, f"{value:.3g}>{maximum}") if maximum is not None and value > maximum else None

    checks = (
        lambda: below("min_words", stats.n_words, c.min_words),
        lambda: above("max_words", stats.n_words, c.max_words),
        lambda: below("min_mean_word_length", stats.mean_word_length, c.min_mean_word_length),
        lambda: above("max_mean_word_length", stats.mean_word_length, c.max_mean_word_length),
        lambda: above("max_symbol_word_ratio", stats.symbol_word_ratio, c.max_symbol_word_ratio),
        lambda: above("max_bullet_lines", stats.bullet_lines, c.max_bullet_lines),
        lambda: above("max_ellipsis_lines", stats.ellipsis_lines, c.max_ellipsis_lines),
        lambda: below("min_alpha_words", stats.alpha_words, c.min_alpha_words),
        lambda: below("min_stop_words", stats.stop_words, c.min_stop_words) if lang == "en" else None,
        lambda: below("min_terminal_punctuation_lines", stats.terminal_punctuation_lines,
                      c.min_terminal_punctuation_lines),
        lambda: above("max_boilerplate_lines", stats.boilerplate_lines, c.max_boilerplate_lines),
        lambda: Reject("lorem_ipsum") if c.drop_lorem_ipsum and stats.lorem_ipsum else None,
        lambda: Reject("curly_brace") if c.drop_curly_brace and stats.curly_brace else None,
        lambda: above("max_duplicate_lines", stats.duplicate_lines, c.max_duplicate_lines),
        lambda: above("max_duplicate_line_chars", stats.duplicate_line_chars, c.max_duplicate_line_chars),
    )
    for check in checks:
        if failure := check():
            return failure
    return None
