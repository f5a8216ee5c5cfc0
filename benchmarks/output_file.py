"""Output files of the benchmark scripts, checked before the work that fills them."""

from __future__ import annotations

import argparse
from pathlib import Path


def prepare_output_file(parser: argparse.ArgumentParser, flag: str, path: Path) -> None:
    """Make ``path``'s folder now (a usage error if it cannot be), so a bad output path is found before a
    long evaluation or measurement, not after it."""
    if path.is_dir():
        parser.error(f"{flag} {path} is a folder; name the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"{flag} {path}: cannot make its folder: {err.strerror}")
