"""What a node process imports: with backend onnx, neither PyTorch nor the network code.

PyTorch and torchvision take ~0.6 GB and seconds of every node start (docs/BENCHMARKS.md, start-up), so
the ONNX Runtime path (model load, text encoder from its cache, pre- and post-processing) must not import
them. Each probe runs in a fresh process, where ``sys.modules`` shows what the code path really loaded; the
node probe runs with PyTorch made unimportable, so no fallback may reach for it either.
"""

from __future__ import annotations

import subprocess
import sys

from partglee_ros.runtime.onnx_text_encoder import OnnxSentenceTextEncoder
from tests.checkpoints import DEFAULT_MODEL
from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "timm", "sentence_transformers", "partglee_ros.model.partglee")


def _imported_after(code: str, blocked: tuple[str, ...] = ()) -> list[str]:
    """Heavy modules a fresh process imported running ``code``, with ``blocked`` ones unimportable."""
    block = f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"  # None: ImportError
    probe = f"{block}{code}\nprint(*(m for m in {HEAVY!r} if sys.modules.get(m) is not None))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.split()


def test_importing_the_runtime_loads_no_heavy_module() -> None:
    assert _imported_after("import partglee_ros.runtime.factory") == []


def test_a_node_on_onnx_runtime_segments_without_pytorch() -> None:
    OnnxSentenceTextEncoder.cached()  # the text encoder's cache, as after a node's first start
    code = (
        "import numpy as np\n"
        "import partglee_ros.ros.node\n"
        "from partglee_ros.runtime.factory import load_segmenter\n"
        f"seg = load_segmenter({str(DEFAULT_MODEL)!r}, backend='onnx')\n"
        "seg.set_vocabulary(['mug', 'bottle'], ['handle', 'body'])\n"
        "image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)\n"
        "result = seg.segment(image)\n"
        "assert (result.height, result.width) == (480, 640) and 'inference' in result.timings_ms\n"
    )
    assert _imported_after(code, blocked=("torch", "torchvision", "sentence_transformers")) == []
