"""ONNX Runtime session options as the node runs its graph, for the benchmarks that time ORT directly."""

from __future__ import annotations

import onnxruntime as ort


def node_like(threads: int) -> ort.SessionOptions:
    """``threads`` intra-op workers that sleep when idle, as the node's default (``onnx_spin_threads`` off)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
