"""Logs and metrics files are strict JSON: Python's json wrote bare NaN (undefined metrics), which jq,
JavaScript and Go refuse, so one undefined metric made a whole metrics.json or eval log unreadable to them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from partglee_ros import strict_json


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_and_numpy_scalars_plain() -> None:
    value = {"ap": math.nan, 3: [np.float32(0.5), np.int64(7), -math.inf], "n": (np.float64("nan"), "x")}
    assert _strict_loads(strict_json.dumps(value)) == {"ap": None, "3": [0.5, 7, None], "n": [None, "x"]}


def test_what_still_cannot_be_written_raises() -> None:
    with pytest.raises(TypeError):
        strict_json.dumps({"array": np.zeros(2)})
