"""Helpers shared by the node and the coordinator that belong to neither (process lifetime)."""
