"""Check an ONNX graph against TensorRT's ONNX operator support list (``tensorrt_ops.json``).

No machine here has TensorRT, so this is how an export is known to parse on a robot before it gets there:
every node's operator must be on the list for the targeted TensorRT version, the opset must be in its range,
and the restrictions from that list that can be read off the graph (TopK, Resize, LayerNormalization,
MaxPool, GridSample) must hold.

    python -m engines.op_support model.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import json_format, message, text_format
from onnx import numpy_helper

OPS_FILE = Path(__file__).with_name("tensorrt_ops.json")
DEFAULT_DOMAINS = ("", "ai.onnx")
RESIZE_COORDINATE_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
)
TOPK_MAX_K = 3840
# what onnx.load raises for a file that is no ONNX model, in the format its suffix names (.onnx binary, .json,
# .textproto, .onnxtxt)
LOAD_ERRORS = (OSError, message.Error, json_format.Error, text_format.Error, onnx.parser.ParseError)


@dataclass(frozen=True)
class OperatorList:
    tensorrt_version: str
    opset_min: int
    opset_max: int
    supported: frozenset[str]
    unsupported: frozenset[str]
    source: str


def load_operator_list(path: Path = OPS_FILE) -> OperatorList:
    data = json.loads(path.read_text())
    return OperatorList(
        data["tensorrt_version"],
        data["opset_min"],
        data["opset_max"],
        frozenset(data["supported"]),
        frozenset(data["unsupported"]),
        data["source"],
    )


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every If/Loop/Scan body inside it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes, including those inside If/Loop/Scan bodies."""
    for g in iter_graphs(graph):
        yield from g.node


def operator_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in iter_nodes(model.graph))


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant outputs of every (sub)graph: a body reads its parents' values too."""
    values = {}
    for g in iter_graphs(graph):
        values.update((t.name, numpy_helper.to_array(t)) for t in g.initializer)
        for node in g.node:
            if node.op_type == "Constant" and node.attribute:
                value = onnx.helper.get_attribute_value(node.attribute[0])
                if isinstance(value, onnx.TensorProto):
                    value = numpy_helper.to_array(value)
                values[node.output[0]] = np.asarray(value)
    return values


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for g in iter_graphs(inferred.graph)
        for v in [*g.value_info, *g.input, *g.output]
        if v.type.tensor_type.HasField("shape")
    }


def _restriction_problems(node: onnx.NodeProto, constants: dict, ranks: dict[str, int]) -> list[str]:
    where = f"{node.op_type} {node.name or node.output[0]!r}"
    problems = []
    if node.op_type == "TopK":
        if _attr(node, "sorted", 1) != 1:
            problems.append(f"{where}: sorted must be 1")
        k = constants.get(node.input[1])
        if k is None:
            problems.append(f"{where}: K is not a constant, so K < {TOPK_MAX_K} cannot be verified")
        elif int(k.max()) >= TOPK_MAX_K:
            problems.append(f"{where}: K must be less than {TOPK_MAX_K}")
    elif node.op_type == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        if mode.decode() not in ("nearest", "linear"):
            problems.append(f"{where}: mode {mode.decode()!r} unsupported")
        if coord.decode() not in RESIZE_COORDINATE_MODES:
            problems.append(f"{where}: coordinate_transformation_mode {coord.decode()!r} unsupported")
        if _attr(node, "antialias", 0):
            problems.append(f"{where}: antialiasing unsupported")
    elif node.op_type == "LayerNormalization":
        if any(node.output[1:]):
            problems.append(f"{where}: only the first output Y is supported")
    elif node.op_type == "MaxPool":
        if any(node.output[1:]):
            problems.append(f"{where}: the Indices output is unsupported")
        if any(d != 1 for d in _attr(node, "dilations", [])):
            problems.append(f"{where}: dilations must be all ones")
    elif node.op_type == "GridSample" and ranks.get(node.input[0]) != 4:
        problems.append(f"{where}: input must be 4D (rank {ranks.get(node.input[0], 'unknown')})")
    return problems


def check_model(model: onnx.ModelProto, ops: OperatorList | None = None) -> list[str]:
    """Every reason TensorRT's ONNX parser (of the listed version) would reject this graph; empty if none."""
    ops = ops or load_operator_list()
    problems = []
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS and not ops.opset_min <= imp.version <= ops.opset_max:
            problems.append(
                f"opset {imp.version} outside TensorRT {ops.tensorrt_version}'s {ops.opset_min}..{ops.opset_max}"
            )
    constants = _constants(model.graph)
    ranks = _ranks(model)
    for node in iter_nodes(model.graph):
        if node.domain not in DEFAULT_DOMAINS:
            problems.append(f"{node.op_type} {node.name!r}: custom domain {node.domain!r} needs a plugin")
        elif node.op_type in ops.unsupported:
            problems.append(
                f"{node.op_type} {node.name!r}: listed as unsupported by TensorRT {ops.tensorrt_version}"
            )
        elif node.op_type not in ops.supported:
            problems.append(f"{node.op_type} {node.name!r}: not on TensorRT {ops.tensorrt_version}'s list")
        else:
            problems.extend(_restriction_problems(node, constants, ranks))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("onnx", type=Path)
    args = parser.parse_args(argv)
    ops = load_operator_list()
    try:
        model = onnx.load(str(args.onnx))
    except LOAD_ERRORS as err:  # exit 2, not 1: 1 says the graph has problems
        parser.error(f"cannot read {args.onnx}: {type(err).__name__}: {' '.join(str(err).split())}")
    if not model.HasField("graph"):  # e.g. an empty file parses as an empty ModelProto
        parser.error(f"{args.onnx} is not an ONNX model (no graph)")
    for op, count in sorted(operator_counts(model).items()):
        print(f"{op:28s} {count:5d}")
    problems = check_model(model, ops)
    for p in problems:
        print(f"NOT SUPPORTED: {p}")
    print(f"{len(problems)} problems against TensorRT {ops.tensorrt_version} ({OPS_FILE.name})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
