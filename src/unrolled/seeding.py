"""Seeds derived from one experiment seed, so every random stream of a run is fixed by the config."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed from ``seed`` and any tags (stable across runs, machines and Python versions)."""
    text = "/".join([str(seed), *map(str, tags)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int, *tags: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *tags))
