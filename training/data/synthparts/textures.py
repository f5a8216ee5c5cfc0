"""Photographic textures and backdrops from scikit-image's bundled sample images (all load offline).

Real photo content on tables, walls and object surfaces keeps a model from learning that "flat colour
means object", which a renderer with only flat colours would teach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import skimage.data

# Photos used as backdrops behind the table (colour, scene-like content).
BACKDROP_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
# Surface textures (grey ones get a random tint): brick, grass and gravel read as table/wall materials.
TEXTURE_NAMES = BACKDROP_NAMES + ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "retina")
TEXTURE_SIZE = 256


def _as_rgb_float(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3].astype(np.float32) / 255.0


@lru_cache(maxsize=1)
def texture_bank() -> tuple[np.ndarray, ...]:
    """Square float32 RGB textures in [0, 1], TEXTURE_SIZE per side (small so lookups stay in cache)."""
    out = []
    for name in TEXTURE_NAMES:
        img = _as_rgb_float(getattr(skimage.data, name)())
        out.append(cv2.resize(img, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA))
    return tuple(out)


@lru_cache(maxsize=1)
def backdrops() -> tuple[np.ndarray, ...]:
    """Full-size float32 RGB photos used where the camera sees past the table (no depth return)."""
    return tuple(_as_rgb_float(getattr(skimage.data, name)()) for name in BACKDROP_NAMES)


@dataclass
class Material:
    """Flat colour (texture < 0) or a tinted photo texture mapped by local surface coordinates."""

    colour: np.ndarray  # (3,) albedo for flat, tint for textured
    texture: int = -1
    scale: float = 1000.0  # texture pixels per metre
    offset: tuple[float, float] = (0.0, 0.0)

    def albedo(self, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Albedo (N, 3) at local points ``p`` with local normals ``n`` (tri-planar projection)."""
        if self.texture < 0:
            return np.broadcast_to(self.colour.astype(np.float32), (len(p), 3))
        tex = texture_bank()[self.texture]
        dominant = np.argmax(np.abs(n), axis=1)
        u_axis = np.where(dominant == 0, 1, 0)
        v_axis = np.where(dominant == 2, 1, 2)
        rows = np.arange(len(p))
        u = ((p[rows, u_axis] * self.scale + self.offset[0]) % TEXTURE_SIZE).astype(np.int32)
        v = ((p[rows, v_axis] * self.scale + self.offset[1]) % TEXTURE_SIZE).astype(np.int32)
        return tex[v, u] * self.colour.astype(np.float32)


def random_material(rng: np.random.Generator, textured_prob: float = 0.5) -> Material:
    """A flat saturated-or-muted colour, or a photo texture with a mild tint and random scale/offset."""
    if rng.random() < textured_prob:
        return Material(
            colour=rng.uniform(0.65, 1.25, size=3),
            texture=int(rng.integers(len(TEXTURE_NAMES))),
            scale=float(rng.uniform(600.0, 3000.0)),
            offset=(float(rng.uniform(0, TEXTURE_SIZE)), float(rng.uniform(0, TEXTURE_SIZE))),
        )
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255)]]], dtype=np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0
    return Material(colour=colour)
