"""JSON that every reader parses: Python's ``json`` writes NaN and inf bare, which is not JSON (jq, JavaScript
and Go reject the whole file), and cannot write NumPy scalars. Undefined metrics (no ground truth) become null."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_ready(value: object) -> object:
    """``value`` with non-finite floats as None, NumPy scalars as Python numbers and mapping keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def dumps(value: object, **kwargs: Any) -> str:
    """``json.dumps`` of ``json_ready(value)``; anything it still cannot write raises instead of writing NaN."""
    return json.dumps(json_ready(value), allow_nan=False, **kwargs)
