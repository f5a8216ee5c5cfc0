"""Base/novel category splits and disjoint seed ranges for SynthParts train/val/test.

The config (training/configs/synthparts.yaml) is the single place that says which objects a model may
see in training; `load_split_config` checks the rules the open-vocabulary evaluation relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from training.data.hierarchy import ImageAnnotation
from training.data.synthparts.categories import CATEGORIES
from training.data.synthparts.scene import generate_scene


@dataclass(frozen=True)
class SplitConfig:
    base_categories: tuple[str, ...]
    novel_categories: tuple[str, ...]
    seeds: dict[str, tuple[int, int]]  # split -> half-open [start, stop)
    split_categories: dict[str, tuple[str, ...]]  # split -> object categories it draws from
    width: int = 320
    height: int = 240

    def categories_for(self, split: str) -> tuple[str, ...]:
        return self.split_categories[split]


def load_split_config(path: str | Path) -> SplitConfig:
    """Read and validate a split YAML: known categories, base/novel disjoint, novel parts seen in base,
    seed ranges disjoint, train drawing from base categories only."""
    raw = yaml.safe_load(Path(path).read_text())
    base, novel = tuple(raw["base_categories"]), tuple(raw["novel_categories"])
    unknown = sorted(set(base + novel) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories {unknown}")
    if set(base) & set(novel):
        raise ValueError(f"categories both base and novel: {sorted(set(base) & set(novel))}")
    base_parts = {p for c in base for p in CATEGORIES[c]}
    unseen = sorted({p for c in novel for p in CATEGORIES[c]} - base_parts)
    if unseen:
        raise ValueError(f"novel categories have part names no base category has: {unseen}")
    groups = {"base": base, "novel": novel, "all": base + novel}
    seeds, split_cats = {}, {}
    for name, spec in raw["splits"].items():
        start, stop = (int(v) for v in spec["seeds"])
        if stop <= start:
            raise ValueError(f"split {name}: empty seed range [{start}, {stop})")
        seeds[name] = (start, stop)
        split_cats[name] = groups[spec["categories"]]
    ranges = sorted(seeds.values())
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        if start < stop:
            raise ValueError(f"seed ranges overlap: {seeds}")
    if "train" in split_cats and set(split_cats["train"]) & set(novel):
        raise ValueError("train split must not draw novel categories")
    return SplitConfig(
        base, novel, seeds, split_cats, int(raw.get("width", 320)), int(raw.get("height", 240))
    )


def split_scenes(
    split: str,
    config: SplitConfig,
    limit: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Iterator[ImageAnnotation]:
    """Yield the scenes of one split in seed order (at most ``limit``), rendered on the fly."""
    start, stop = config.seeds[split]
    if limit is not None:
        stop = min(stop, start + limit)
    for seed in range(start, stop):
        yield generate_scene(
            seed, width or config.width, height or config.height, categories=config.categories_for(split)
        )
