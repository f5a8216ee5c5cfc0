"""Base/novel split of object categories, the axis every open-vocabulary metric is reported on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CategorySplit:
    """Object categories seen in training (``base``) and held out (``novel``).

    Parts follow their object: ``mug:handle`` is base when ``mug`` is, which is how OV-PARTS and PartCLIPSeg
    make the seen and unseen object-part vocabularies disjoint.
    """

    base: frozenset[str]
    novel: frozenset[str]

    def __init__(self, base: Iterable[str], novel: Iterable[str]) -> None:
        object.__setattr__(self, "base", frozenset(base))
        object.__setattr__(self, "novel", frozenset(novel))
        overlap = self.base & self.novel
        if overlap:
            raise ValueError(f"categories both base and novel: {sorted(overlap)}")

    def subset(self, name: str) -> frozenset[str]:
        """The object categories of ``"base"`` or ``"novel"``."""
        if name not in ("base", "novel"):
            raise ValueError(f"split subset must be 'base' or 'novel', got {name!r}")
        return self.base if name == "base" else self.novel
