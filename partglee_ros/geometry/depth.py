"""Decode ROS depth images into metres with explicit holes.

Depth cameras publish either ``16UC1`` (integer millimetres, 0 = no reading) or ``32FC1`` (float metres,
0/NaN/inf = no reading). Everything downstream works on float32 metres with NaN marking a hole, so a missing
reading can never be mistaken for a point at the camera origin.
"""

from __future__ import annotations

import numpy as np

MILLIMETRE_ENCODINGS = ("16UC1", "mono16")
METRE_ENCODINGS = ("32FC1", "64FC1")


def depth_to_metres(depth: np.ndarray, encoding: str | None = None) -> np.ndarray:
    """Return an HxW float32 depth in metres with NaN for every hole (0, negative, NaN or inf readings).

    ``encoding`` is the ROS ``sensor_msgs/Image.encoding``; when None it is inferred from the dtype
    (unsigned integers are millimetres, floats are metres), which is how the two ROS conventions differ.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    if encoding is None:
        millimetres = np.issubdtype(depth.dtype, np.integer)
    elif encoding in MILLIMETRE_ENCODINGS:
        millimetres = True
    elif encoding in METRE_ENCODINGS:
        millimetres = False
    else:
        raise ValueError(
            f"unsupported depth encoding {encoding!r}; expected one of "
            f"{MILLIMETRE_ENCODINGS + METRE_ENCODINGS}"
        )
    if encoding is not None and millimetres != np.issubdtype(depth.dtype, np.integer):
        raise ValueError(
            f"depth of dtype {depth.dtype} with encoding {encoding!r}: "
            + ("millimetres are integers (uint16)" if millimetres else "metres are floats (float32)")
        )
    metres = depth.astype(np.float32)
    if millimetres:
        metres *= np.float32(1e-3)
    holes = ~np.isfinite(metres) | (metres <= 0)
    metres[holes] = np.nan
    return metres
