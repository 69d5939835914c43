"""The RWKV World tokenizer (65,536 ids), read from the vocabulary file the `rwkv` package ships.

Pure Python and torch-free, so the coordinator's data pipeline can use it without loading torch.
Loading the vocabulary takes ~2.4 s, so one instance is cached per process.
"""

from __future__ import annotations

import functools
from importlib import resources

TOKENIZER_NAME = "rwkv-world-v20230424"
VOCAB_SIZE = 65536
END_OF_DOCUMENT = 0  # RWKV separates documents with token 0


class WorldTokenizer:
    """Greedy longest-match tokenizer over the World vocabulary (the reference behaviour)."""

    name = TOKENIZER_NAME
    vocab_size = VOCAB_SIZE
    eod_id = END_OF_DOCUMENT

    def __init__(self) -> None:
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        vocab = resources.files("rwkv").joinpath("rwkv_vocab_v20230424.txt")
        with resources.as_file(vocab) as path:
            self._trie = TRIE_TOKENIZER(str(path))

    def encode(self, text: str) -> list[int]:
        return self._trie.encodeBytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return self._trie.encodeBytes(data)

    def decode(self, ids: list[int]) -> str:
        """Decode ids to text; byte sequences cut mid-character become U+FFFD, never an error."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self._trie.idx2token.get(int(i), b"") for i in ids)


def load_tokenizer(name: str = TOKENIZER_NAME) -> WorldTokenizer:
    """The process-wide tokenizer for `name`; raises ValueError for a tokenizer we do not ship."""
    if name != TOKENIZER_NAME:
        raise ValueError(f"unknown tokenizer {name!r}; this gpt5os knows only {TOKENIZER_NAME!r}")
    return _world_tokenizer()


@functools.cache
def _world_tokenizer() -> WorldTokenizer:
    return WorldTokenizer()
