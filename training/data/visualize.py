"""Look at the data: RGB | objects | parts (+ 3D part axes) | depth panels, labelled, written as PNG.

    python -m training.data.visualize --out docs/images --num 4 --seed 0 --prefix synthparts_
    python -m training.data.visualize --out /tmp/vis --paco-json out/annotations.json --num 10

Works on any ImageAnnotation (SynthParts scenes or a PACO-style JSON with its images), so a person can
check masks, labels, parent links and poses by eye.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from training.data.coco_io import index_paco_json
from training.data.hierarchy import ImageAnnotation, part_label
from training.data.synthparts import CATEGORIES, generate_scene

# what reading a --paco-json raises for a missing file or one that is not PACO/COCO JSON
PACO_ERRORS = (OSError, ValueError, KeyError, TypeError)


def _colour(i: int) -> np.ndarray:
    """Well-separated colours from a golden-ratio hue walk."""
    hsv = np.array([[[int((i * 0.618034 % 1.0) * 180), 220, 255]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _label(img: np.ndarray, text: str, xy: tuple[int, int], colour: np.ndarray) -> None:
    x, y = xy
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    x, y = min(max(x, 0), img.shape[1] - tw - 2), min(max(y, th + 2), img.shape[0] - 2)
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + 2), (0, 0, 0), -1)
    cv2.putText(
        img, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, tuple(int(c) for c in colour), 1, cv2.LINE_AA
    )


def _overlay(base: np.ndarray, masks: list[np.ndarray], labels: list[str], scale: int) -> np.ndarray:
    out = cv2.resize(base, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    anchors = []
    for i, mask in enumerate(masks):
        big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        colour = _colour(i)
        out[big > 0] = 0.45 * out[big > 0] + 0.55 * colour
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(float(c) for c in colour), 1)
        ys, xs = np.nonzero(big)
        anchors.append((int(xs.min()), int(ys.min())) if len(xs) else None)
    out = np.clip(out, 0, 255).astype(np.uint8)
    for i, (anchor, text) in enumerate(zip(anchors, labels, strict=True)):
        if anchor is not None:
            _label(out, text, anchor, _colour(i))
    return out


def _draw_axes(panel: np.ndarray, ann: ImageAnnotation, scale: int) -> None:
    """Project each part's 3D long axis (centre +- extent/2 along axis) with the intrinsics."""
    if ann.intrinsics is None:
        return
    K = np.asarray(ann.intrinsics)
    for part in ann.parts():
        if part.pose is None:
            continue
        half = part.pose.axis * part.pose.extent[0] / 2
        ends = np.stack([part.pose.center - half, part.pose.center + half])
        if (ends[:, 2] <= 0).any():
            continue
        uv = (ends @ K.T)[:, :2] / ends[:, 2:3] * scale
        p0, p1 = (tuple(int(round(v)) for v in p) for p in uv)
        cv2.line(panel, p0, p1, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.circle(panel, tuple(int(round(v)) for v in uv.mean(axis=0)), 2, (255, 255, 255), -1)


def render_panels(ann: ImageAnnotation, scale: int = 2) -> np.ndarray:
    """RGB | objects | parts with 3D axes | depth (turbo, black = no return) as one RGB image.

    ``scale`` upsamples the panels so labels stay legible on small images."""
    if ann.image is None:
        raise ValueError(f"{ann.file_name}: no image loaded")
    rgb = cv2.resize(ann.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    objects = _overlay(
        ann.image, [o.mask for o in ann.objects], [f"{o.name}#{o.id}" for o in ann.objects], scale
    )
    pairs = [(o, p) for o in ann.objects for p in o.parts]
    parts = _overlay(
        ann.image,
        [p.mask for _, p in pairs],
        [f"{part_label(o.name, p.name)}>#{o.id}" for o, p in pairs],
        scale,
    )
    _draw_axes(parts, ann, scale)
    panels = [rgb, objects, parts]
    if ann.depth is not None:
        valid = ann.depth > 0
        lo, hi = np.percentile(ann.depth[valid], [1, 99]) if valid.any() else (0.0, 1.0)
        norm = np.clip((ann.depth - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        depth = cv2.cvtColor(cv2.applyColorMap(norm, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
        depth[~valid] = 0
        panels.append(cv2.resize(depth, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    return np.concatenate(panels, axis=1)


def _paco_samples(path: Path, num: int) -> tuple[list[ImageAnnotation], list[str]]:
    """The first ``num`` images of a PACO-style JSON, and the paths of those among them whose image file is
    missing. Only these are decoded: all of PACO-LVIS train's masks and images would need hundreds of GB."""
    index = index_paco_json(path)
    samples, missing = [], []
    for i in range(min(num, len(index))):
        try:
            samples.append(index.get(i))
        except FileNotFoundError as err:
            missing.append(err.filename)
    return samples, missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    parser.add_argument("--num", type=int, default=4, help="number of samples to render")
    parser.add_argument("--seed", type=int, default=0, help="first SynthParts seed (seeds seed..seed+num-1)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument(
        "--categories",
        nargs="+",
        choices=sorted(CATEGORIES),
        metavar="NAME",
        help=f"SynthParts object categories to draw, of: {', '.join(sorted(CATEGORIES))}",
    )
    parser.add_argument("--paco-json", type=Path, default=None, help="render this PACO-style JSON instead")
    parser.add_argument("--prefix", default="", help="prefix for output file names")
    parser.add_argument("--scale", type=int, default=2, help="integer upscaling of the panels")
    args = parser.parse_args(argv)
    if args.paco_json is not None:
        try:
            samples, missing = _paco_samples(args.paco_json, args.num)
        except PACO_ERRORS as err:
            reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
            parser.error(f"cannot read --paco-json {args.paco_json} as PACO/COCO JSON: {reason}")
        if missing:
            images = args.paco_json.parent / "images"
            example = os.path.relpath(missing[0], images)
            parser.error(f"--paco-json: {len(missing)} of its images are not in {images} (e.g. {example})")
    else:
        samples = [
            generate_scene(s, args.width, args.height, args.categories)
            for s in range(args.seed, args.seed + args.num)
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    for ann in samples:
        path = args.out / f"{args.prefix}{Path(ann.file_name).stem}.png"
        cv2.imwrite(str(path), cv2.cvtColor(render_panels(ann, args.scale), cv2.COLOR_RGB2BGR))
        print(path)


if __name__ == "__main__":
    main()
