"""Generated modules for proto/gpt5os/v1 (see scripts/gen_proto.py)."""
