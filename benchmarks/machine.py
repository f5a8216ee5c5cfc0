"""The CPU a benchmark ran on, for its table's header.

These containers land on AVX2 hosts on some days and AVX-512 ones on others; timings (and the ratio between
backends, whose kernels dispatch on the instruction set) are only comparable on the same kind.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# highest first: the first one the CPU has names its vector width
ISA_FLAGS = (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))


def cpu_flags() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; ("", empty) where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if key.strip() in ("model name", "flags")
    )
    return fields.get("model name", ""), set(fields.get("flags", "").split())


def describe_cpu() -> str:
    """E.g. "2-core AMD EPYC (x86_64, AVX-512 VNNI)": cores this process may use, model, widest vector ISA."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model, flags = cpu_flags()
    isa = next((name for flag, name in ISA_FLAGS if flag in flags), "")
    detail = ", ".join(part for part in (platform.machine(), isa) if part)
    return f"{cores}-core {model or 'CPU'} ({detail})"
