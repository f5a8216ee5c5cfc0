"""A checkpoint's config.json as the runtime reads it: every corrupt or invalid file is one BackendError
naming the file (never a YAML, attribute or type error escaping), and the values the model code fixes are
refused when a config asks for others."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from partglee_ros.config import (
    CONFIG_FILE,
    NUM_FEATURE_LEVELS,
    WEIGHTS_FILE,
    ModelConfig,
    file_sha256,
    weights_digest,
)
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.factory import read_model_config

VALID = json.dumps(ModelConfig().to_dict(), indent=2)


def _with(**changes: object) -> str:
    return json.dumps(ModelConfig().to_dict() | changes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID[: len(VALID) // 2], "not valid YAML/JSON"),  # truncated: a ParserError
        ("\t" + VALID, "not valid YAML/JSON"),  # a leading tab: a ScannerError
        ("", "must be a mapping of keys to values, got NoneType"),
        ("[1, 2]", "must be a mapping of keys to values, got list"),
        (_with(loss=3), "loss must be a mapping of loss settings, got 3"),
        (_with(loss={"focal": 1}), r"unknown loss config keys: \['focal'\]"),
        (_with(input_size="abc"), "input_size must be two positive integers .* got 'abc'"),
        (_with(input_size=[0, 0]), r"input_size must be two positive integers .* got \[0, 0\]"),
        (_with(input_size=[320]), "input_size must be two positive integers"),
        (_with(input_size=[320.0, 240]), "input_size must be two positive integers"),
        (_with(input_size=[True, 240]), "input_size must be two positive integers"),
        (_with(input_size=None), "input_size must be two positive integers"),
        (_with(num_feature_levels=4), "num_feature_levels must be 3 .* got 4"),
        (_with(hidden_dim="abc"), "hidden_dim must be int, got 'abc'"),
        (_with(num_queries=True), "num_queries must be int, got True"),
        (_with(num_heads=0), "num_heads must be a positive integer, got 0"),  # was a ZeroDivisionError
        (_with(text_dim=-1), "text_dim must be a positive integer, got -1"),
        (_with(loss={"num_points": 0}), "num_points must be a positive integer, got 0"),
        (_with(backbone_weights=3), "backbone_weights must be str | None, got 3"),
        (_with(loss={"dice_weight": "high"}), "dice_weight must be float, got 'high'"),
    ],
    ids=[
        "truncated",
        "leading-tab",
        "empty",
        "a-list",
        "loss-a-number",
        "loss-unknown-key",
        "input-size-a-string",
        "input-size-zero",
        "input-size-one-value",
        "input-size-float",
        "input-size-bool",
        "input-size-null",
        "four-feature-levels",
        "int-a-string",
        "int-a-bool",
        "zero-heads",
        "negative-text-dim",
        "loss-zero-points",
        "optional-path-a-number",
        "loss-float-a-string",
    ],
)
def test_a_corrupt_or_invalid_config_is_a_backend_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(
        BackendError, match=f"model config {tmp_path / CONFIG_FILE} is invalid: .*{message}"
    ) as e:
        read_model_config(tmp_path)
    assert "\n" not in str(e.value)  # one line for the node's log, as every start-up error


def test_a_valid_config_is_read_with_its_input_size_as_a_tuple(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(_with(input_size=[640, 480]))
    config = read_model_config(tmp_path)
    assert config.input_size == (640, 480) and config.num_feature_levels == NUM_FEATURE_LEVELS


def test_the_feature_level_count_is_the_model_codes() -> None:
    from partglee_ros.model.partglee import ENCODER_STRIDES

    assert len(ENCODER_STRIDES) == NUM_FEATURE_LEVELS


def test_file_sha256_streams_the_file_and_weights_digest_uses_it(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over one 1 MiB block
    (tmp_path / WEIGHTS_FILE).write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / WEIGHTS_FILE) == weights_digest(tmp_path) == expected
