"""Normalization, each quality filter, and exact dedup (pure logic, no tokenizer)."""

from __future__ import annotations

import pytest
from gpt5os.coordinator.data.filters import (
    DUPLICATE,
    EMAIL_MASK,
    IP_MASK,
    LONG_LINES,
    LOW_ALPHA,
    NON_TEXT,
    TOO_SHORT,
    DocumentFilter,
    FilterConfig,
    count_letters,
    digest_of,
    mask_pii,
    normalize,
)

PROSE = "The quick brown fox jumps over the lazy dog, again and again, all day long.\n" * 3


def test_normalize_line_ends_trailing_space_and_nfc() -> None:
    assert normalize("\n\na  \r\nb\t\rc\n\n") == "a\nb\nc"
    assert normalize("cafe\u0301") == "caf\u00e9"  # NFD -> NFC
    assert normalize("  indented stays") == "  indented stays"


def test_kept_document_has_normalized_text_and_digest() -> None:
    v = DocumentFilter().check(PROSE.replace("\n", "\r\n").encode())
    assert v.dropped_by is None
    assert v.text == PROSE.strip("\n") and v.digest == digest_of(v.text)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00" + PROSE.encode(), NON_TEXT),  # a NUL byte: binary
        (bytes(range(128, 256)) * 4 + PROSE.encode(), NON_TEXT),  # not UTF-8
        ("\x01\x02\x03\x04" * 10 + PROSE, NON_TEXT),  # control characters
        (b"too short", TOO_SHORT),
        (b"", TOO_SHORT),
        (b"   \n\n\t  \n", TOO_SHORT),
        ("3.14159 2.71828 1.41421 " * 20, LOW_ALPHA),
        ("=+-*/" * 100, LOW_ALPHA),
        (PROSE + "x" * 2001, LONG_LINES),
    ],
)
def test_each_filter_drops_its_kind(data: bytes | str, reason: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    assert DocumentFilter().check(raw).dropped_by == reason


def test_count_letters_ascii_fast_path_agrees_with_unicode_rule() -> None:
    for text in ["abc 123 _x_", "Grüße, мир! 3.14", "", "ÀÉ" * 3 + "z"]:
        assert count_letters(text) == sum(c.isalpha() for c in text)


def test_thresholds_are_configurable() -> None:
    loose = DocumentFilter(FilterConfig(min_chars=1, min_alpha_ratio=0.0, max_line_chars=10**6))
    for raw in [b"hi", b"12345 67890", (PROSE + "x" * 5000).encode()]:
        assert loose.check(raw).dropped_by is None


def test_exact_duplicates_after_normalization_are_dropped_first_kept() -> None:
    f = DocumentFilter()
    assert f.check(PROSE.encode()).dropped_by is None
    assert f.check((PROSE.replace("\n", "  \r\n") + "\n\n").encode()).dropped_by == DUPLICATE
    assert f.check((PROSE + "one more line here").encode()).dropped_by is None
    # A junk document that repeats counts as junk each time, not as a duplicate.
    assert f.check(b"short").dropped_by == TOO_SHORT
    assert f.check(b"short").dropped_by == TOO_SHORT
    # A fresh filter has no memory of another pass.
    assert DocumentFilter().check(PROSE.encode()).dropped_by is None


def test_pii_emails_and_public_ips_are_masked() -> None:
    text = (
        "Contact guido.van.rossum@python.org or Jane_Doe+list@mail.example.co.uk today.\n"
        "server = '203.0.113.77' if prod else '8.8.8.8'  # not ours\n"
    )
    masked = mask_pii(text)
    assert "python.org" not in masked and "mail.example.co.uk" not in masked
    assert masked.count(EMAIL_MASK) == 2
    assert "8.8.8.8" not in masked and masked.count(IP_MASK) == 1  # 203.0.113.x: documentation
    assert "'203.0.113.77'" in masked


def test_pii_leaves_code_addresses_and_versions_alone() -> None:
    text = (
        "HOST = '127.0.0.1'; LAN = '192.168.1.20'; NET = '10.0.0.0/8'\n"
        "version = '1.2.3.4.5'; sample = 'user@example.com'; decorator = '@property'\n"
        "ip = '999.1.1.1'\n"
    )
    assert mask_pii(text) == text


def test_kept_documents_come_out_masked() -> None:
    v = DocumentFilter().check((PROSE + "Mail me at someone@gmail.com or 1.1.1.1.\n").encode())
    assert v.dropped_by is None
    assert "someone@gmail.com" not in v.text and EMAIL_MASK in v.text and IP_MASK in v.text
    assert v.digest == digest_of(v.text)
