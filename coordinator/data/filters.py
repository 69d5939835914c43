"""Which documents are worth training on: normalization, quality filters, PII masking, exact dedup.

Every document goes through `clean` (pure, runs in worker processes): the normalized, PII-masked
text when it passes the quality filters, or the name of the first filter that dropped it.
`DocumentFilter.check` adds exact dedup on top (it remembers digests, so it runs in one process,
in stream order). Filter names are the keys of the report's `dropped` counts, so a maintainer
sees why a corpus shrank; near-duplicates are counted under `near_duplicate` (see neardup.py).

Why these filters and not a library's: the maintained web-text filters (datatrove's Gopher, C4
and FineWeb filters) judge prose by stop words, terminal punctuation and word lengths, and drop
nearly all source code, which is what the embedded corpus is. What is kept here holds for code
and prose alike: binary or undecodable data, too-short documents, letter-poor data (tables of
numbers, base64) and very long lines (minified code, data dumps). The PII patterns follow
datatrove's `PIIFormatter` (emails; public IPv4 addresses only, so `127.0.0.1` in code stays).
The checks are regex counts in C, no per-character Python loops: they run over every byte.
"""

from __future__ import annotations

import hashlib
import ipaddress
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
NEAR_DUPLICATE = "near_duplicate"
FILTER_NAMES = (NON_TEXT, TOO_SHORT, LOW_ALPHA, LONG_LINES, DUPLICATE, NEAR_DUPLICATE)

# PII replacements: reserved names and addresses that can never belong to anyone (RFC 2606,
# RFC 5737), so the masked text still reads as an email or an address.
EMAIL_MASK = "email@example.com"
IP_MASK = "192.0.2.1"
_EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\w|\.\w)"
)

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
    digest: bytes = b""  # sha256 of the cleaned UTF-8 text (dedup key and split hash)


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


def _mask_email(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0).lower().endswith("example.com") else EMAIL_MASK


def _mask_ip(match: re.Match[str]) -> str:
    return IP_MASK if ipaddress.IPv4Address(match.group(0)).is_global else match.group(0)


def mask_pii(text: str) -> str:
    """Email addresses -> EMAIL_MASK, public IPv4 addresses -> IP_MASK. Private, loopback and
    documentation addresses (`127.0.0.1`, `10.0.0.1`) and example.com emails stay as they are:
    they name no one, and code is full of them."""
    if "@" in text:
        text = _EMAIL.sub(_mask_email, text)
    if "." in text:
        text = _IPV4.sub(_mask_ip, text)
    return text


def clean(data: bytes, cfg: FilterConfig) -> tuple[str | None, str]:
    """(None, text to train on) for a document that passes the quality filters, else
    (name of the first filter that dropped it, ""). Pure: runs in worker processes."""
    if b"\x00" in data:
        return NON_TEXT, ""
    text = normalize(decode(data))
    n = len(text)
    if n and len(_NON_TEXT_CHAR.findall(text)) > cfg.max_non_text_ratio * n:
        return NON_TEXT, ""
    if n < cfg.min_chars:
        return TOO_SHORT, ""
    if count_letters(text) < cfg.min_alpha_ratio * n:
        return LOW_ALPHA, ""
    if n > cfg.max_line_chars and max(map(len, text.split("\n"))) > cfg.max_line_chars:
        return LONG_LINES, ""
    return None, mask_pii(text)


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
        dropped_by, text = clean(data, self.config)
        if dropped_by is not None:
            return Verdict(dropped_by)
        digest = digest_of(text)
        if not self.first_copy(digest):
            return Verdict(DUPLICATE)
        return Verdict(None, text, digest)

    def first_copy(self, digest: bytes) -> bool:
        """True the first time a digest is seen (that copy is kept), False for every repeat."""
        key = digest[:16]
        if key in self._seen:
            return False
        self._seen.add(key)
        return True
