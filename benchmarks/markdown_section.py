"""Replace one named section of a Markdown file, so several benchmark scripts can share docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def write_section(path: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- BEGIN name -->` and `<!-- END name -->`, appending the markers if absent."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def report(body: str, name: str, write: bool, path: Path = BENCHMARKS_DOC) -> None:
    """What every benchmark script ends with: print its table, and with --write put it in its section."""
    print(body)
    if write:
        write_section(path, name, body)
