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


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo's text; "" and no flags where it has none
    (aarch64 names neither)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name", ""), set(fields.get("flags", "").split())


def vector_isa(flags: set[str]) -> str:
    """The widest x86 vector extension among ``flags``; "" for none (or another architecture)."""
    return next((name for flag, name in ISA_FLAGS if flag in flags), "")


def describe_cpu() -> str:
    """E.g. "2-core AMD EPYC (x86_64, AVX-512 VNNI)": cores this process may use, model, widest vector ISA."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux
        model, flags = "", set()
    detail = ", ".join(part for part in (platform.machine(), vector_isa(flags)) if part)
    return f"{cores}-core {model or 'CPU'} ({detail})"
