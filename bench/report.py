"""Shared by every benchmark: machine description and writing one section of the report."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def stamp(script: str) -> str:
    """The line that opens each section: when, where, and by what."""
    return f"Measured {time.strftime('%Y-%m-%d')} on {machine()} by `make bench` (`{script}`)."


def write_section(name: str, body: str, path: Path = REPORT) -> None:
    """Replace the text between this benchmark's markers, keeping the rest of the file."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, method: str, tables: str, path: Path = REPORT) -> None:
    """Write `bench/<name>.py`'s section (the stamp, how it measured, its tables) and print
    the tables."""
    write_section(name, f"{stamp(f'bench/{name}.py')} {method}\n\n{tables}", path)
    print(tables)


def steady_samples_per_sec(client, run_id: str) -> float:
    """A pipeline run's steady-state speed: the median of its logged
    `train/samples_per_sec` over the epochs after the first (which pays warm-up)."""
    history = sorted(
        client.get_metric_history(run_id, "train/samples_per_sec"), key=lambda m: m.step
    )
    return statistics.median(m.value for m in history[1:] or history)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
