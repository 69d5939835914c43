"""Which documents are worth training on: normalization, quality filters and exact dedup.

Every document goes through `DocumentFilter.check`, which answers a `Verdict`: the normalized
text and its digest when kept, or the name of the first filter that dropped it. Filter names are
the keys of the report's `dropped` counts, so a maintainer sees why a corpus shrank.

The filters are deliberately simple and cheap (regex counts in C, no per-character Python
loops): they run over every byte of the corpus before the much slower tokenizer does.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from dataclasses import asdict, dataclass

# Report keys, in the order the filters run; `duplicate` runs last, so a document that is both
# junk and a duplicate counts as junk.
NON_TEXT = "non_text"
TOO_SHORT = "too_short"
LOW_ALPHA = "low_alpha"
LONG_LINES = "long_lines"
DUPLICATE = "duplicate"
FILTER_NAMES = (NON_TEXT, TOO_SHORT, LOW_ALPHA, LONG_LINES, DUPLICATE)

_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter
# Control characters other than tab, newline, form feed, carriage return; U+FFFD marks bytes that
# were not UTF-8.
_NON_TEXT_CHAR = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_LINE_END = re.compile(r"\r\n?")
_ASCII_LETTERS = string.ascii_letters.encode()


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """Thresholds of the quality filters; part of the options a prepared directory records.

    Defaults are tuned on Python source (the stdlib corpus drops only empty and one-line files)
    and stay loose for prose: a document is dropped when it is shorter than `min_chars`, when more
    than `max_non_text_ratio` of its characters are control characters or undecodable bytes (or
    it holds a NUL byte: binary), when fewer than `min_alpha_ratio` of its characters are letters
    (tables of numbers, base64 blobs), or when a line is longer than `max_line_chars` (minified
    code, data dumps).
    """

    min_chars: int = 64
    max_non_text_ratio: float = 0.01
    min_alpha_ratio: float = 0.25
    max_line_chars: int = 2000

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Verdict:
    """`dropped_by` is None for a kept document, else the name of the filter that dropped it."""

    dropped_by: str | None
    text: str = ""
    digest: bytes = b""  # sha256 of the normalized UTF-8 text (dedup key and split hash)


def decode(data: bytes) -> str:
    """UTF-8 text, with undecodable bytes as U+FFFD (counted by the non-text filter)."""
    return data.decode("utf-8", errors="replace")


def normalize(text: str) -> str:
    """The canonical form of a document: NFC, '\\n' line ends, no trailing spaces or tabs on a
    line, no blank lines at either end. Both the dedup hash and the tokenizer see this form,
    so two files that differ only in line ends or trailing blanks are one document."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = _LINE_END.sub("\n", text)
    text = "\n".join([line.rstrip(" \t") for line in text.split("\n")])
    return text.strip("\n")


def count_letters(text: str) -> int:
    """Unicode letters in `text`; pure-ASCII text (most code) takes a C fast path ~10x quicker
    than the regex."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_LETTERS))
    return len(_LETTER.findall(text))


def digest_of(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


class DocumentFilter:
    """Stateful across one pass: remembers the digests it kept, to drop exact duplicates."""

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()
        self._seen: set[bytes] = set()

    def check(self, data: bytes) -> Verdict:
        cfg = self.config
        if b"\x00" in data:
            return Verdict(NON_TEXT)
        text = normalize(decode(data))
        n = len(text)
        if n and len(_NON_TEXT_CHAR.findall(text)) > cfg.max_non_text_ratio * n:
            return Verdict(NON_TEXT)
        if n < cfg.min_chars:
            return Verdict(TOO_SHORT)
        if count_letters(text) < cfg.min_alpha_ratio * n:
            return Verdict(LOW_ALPHA)
        if n > cfg.max_line_chars and max(map(len, text.split("\n"))) > cfg.max_line_chars:
            return Verdict(LONG_LINES)
        digest = digest_of(text)
        key = digest[:16]
        if key in self._seen:
            return Verdict(DUPLICATE)
        self._seen.add(key)
        return Verdict(None, text, digest)
