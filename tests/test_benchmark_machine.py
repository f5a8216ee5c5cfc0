"""Benchmark headers name the CPU's vector ISA: AVX2 and AVX-512 hosts give different timings and ratios."""

from __future__ import annotations

import os
import platform

import pytest

from benchmarks.machine import describe_cpu, parse_cpuinfo, vector_isa

AVX2_HOST = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma
bogomips\t: 4499.99

processor\t: 1
model name\t: another CPU
flags\t\t: fpu
"""
AARCH64_HOST = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("flags", "isa"),
    [
        ({"avx", "avx2"}, "AVX2"),
        ({"avx", "avx2", "avx512f"}, "AVX-512"),
        ({"avx", "avx2", "avx512f", "avx512_vnni"}, "AVX-512 VNNI"),
        ({"fp", "asimd"}, ""),
    ],
)
def test_the_widest_vector_extension_is_named(flags: set[str], isa: str) -> None:
    assert vector_isa(flags) == isa


def test_cpuinfo_gives_the_first_cpus_model_and_flags() -> None:
    assert parse_cpuinfo(AVX2_HOST) == ("AMD EPYC 7B12", {"fpu", "sse", "sse2", "avx", "avx2", "fma"})
    assert parse_cpuinfo(AARCH64_HOST) == ("", set())


def test_this_machine_is_described_with_its_cores_and_architecture() -> None:
    text = describe_cpu()
    assert text.startswith(f"{len(os.sched_getaffinity(0))}-core ") and f"({platform.machine()}" in text
