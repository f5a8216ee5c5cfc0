"""Benchmark headers name the CPU's vector ISA: AVX2 and AVX-512 hosts give different timings and ratios."""

from __future__ import annotations

import os
import platform

from benchmarks.machine import ISA_FLAGS, cpu_flags, describe_cpu


def test_cpu_description_names_cores_model_and_widest_vector_isa() -> None:
    model, flags = cpu_flags()
    assert model and flags, "/proc/cpuinfo gave no model name or flags"
    isa = next((name for flag, name in ISA_FLAGS if flag in flags), None)
    detail = f"{platform.machine()}, {isa}" if isa else platform.machine()
    assert describe_cpu() == f"{len(os.sched_getaffinity(0))}-core {model} ({detail})"
