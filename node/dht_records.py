"""Reading a DHT dictionary record: one helper for every board peers publish on."""

from __future__ import annotations

import hivemind


def dht_records(dht: hivemind.DHT, key: str) -> dict:
    """{subkey: value} of a DHT dictionary record (empty when absent or not a dictionary);
    values are whatever peers stored, so callers validate them."""
    found = dht.get(key, latest=True)
    if found is None or not isinstance(found.value, dict):
        return {}
    return {
        subkey: entry.value
        for subkey, entry in found.value.items()
        if getattr(entry, "value", None) is not None
    }
