"""Start-up of the runtime as a node process pays it: imports, ``load_segmenter``, a first vocabulary.

Each start runs in a fresh Python process with its own HOME, so the on-disk caches (the exported text
encoder, Inductor's code) start empty: the first start in a HOME is a robot's first boot, the next ones
are every later boot. (A model directory that ships text_encoder.onnx needs no text encoder cache.) Reports wall time (imports; load_segmenter plus the first set_vocabulary) and the
process's resident memory after it, and which of PyTorch and sentence-transformers it imported. Prints a table and, with --write, replaces this script's section of
docs/BENCHMARKS.md.

    python -m benchmarks.startup [--model models/default] [--backend onnx] [--starts 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.markdown_section import report

REPO = Path(__file__).resolve().parents[1]

# Runs in the child: one start, reported as JSON on the last line of stdout.
_START = """
import json, sys, time
t0 = time.perf_counter()
from partglee_ros.runtime.factory import load_segmenter
t1 = time.perf_counter()
seg = load_segmenter(sys.argv[1], backend=sys.argv[2])
seg.set_vocabulary(["mug", "kettle"], ["handle", "lid"])
t2 = time.perf_counter()
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
heavy = [m for m in ("torch", "sentence_transformers") if m in sys.modules]
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1, "rss_mib": rss, "heavy": heavy}))
"""


def start(model: Path, backend: str, home: Path) -> dict:
    env = os.environ | {"HOME": str(home)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    run = subprocess.run(
        [sys.executable, "-c", _START, str(model), backend],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
        timeout=900,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--starts", type=int, default=3, help="starts in the same HOME (the first is cold)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        starts = [start(args.model, args.backend, Path(home)) for _ in range(args.starts)]
    lines = [
        f"## Start-up (`backend: {args.backend}`)",
        "",
        f"Measured by `python -m benchmarks.startup --backend {args.backend} --starts {args.starts} --write` on "
        f"{platform.machine()} ({len(os.sched_getaffinity(0))} CPU cores); `{args.model.name}`; each start is "
        "a fresh process (imports, `load_segmenter`, a first 2+2-name vocabulary), all in one new HOME.",
        "",
        "| start | imports (s) | load + first vocabulary (s) | RSS after (MiB) | imported |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(starts):
        label = "first (empty caches)" if i == 0 else f"{i + 1}"
        lines.append(
            f"| {label} | {s['imports_s']:.1f} | {s['load_s']:.1f} | {s['rss_mib']:.0f} | "
            f"{', '.join(s['heavy']) or 'neither torch nor sentence_transformers'} |"
        )
    body = "\n".join(lines)
    report(body, "startup" if args.backend == "onnx" else f"startup-{args.backend}", args.write)


if __name__ == "__main__":
    main()
