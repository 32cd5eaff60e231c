"""The side-by-side table of a compression: the parent and each variant."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table


@dataclass
class Row:
    variant: str  # "torch (vN)" for the parent, else the method
    accuracy: float
    size_bytes: int
    latency_b1_ms: float
    latency_batch_ms: float
    drop: float = 0.0
    agreement: float = 1.0
    registered: str = "-"  # "vN @alias", "no: <why>", or "-" for the parent
    detail: str = ""  # exporter and opset, or what each layer became
    worst_recall_drop: str = "-"  # e.g. "class 8: 0.0278", the class whose recall fell most
    refusals: list[str] = field(default_factory=list)


def size_text(size_bytes: int) -> str:
    if size_bytes < 1024**2:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / 1024**2:.2f} MiB"


def comparison_table(title: str, rows: list[Row], batch_size: int) -> Table:
    table = Table(title=title)
    columns = ("variant", "accuracy", "drop", "agreement", "size", "latency b1",
               f"latency b{batch_size}", "registered")  # fmt: skip
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.variant, f"{row.accuracy:.4f}", f"{row.drop:+.4f}", f"{row.agreement:.4f}",
            size_text(row.size_bytes), f"{row.latency_b1_ms * 1000:.0f} us",
            f"{row.latency_batch_ms * 1000:.0f} us", row.registered,
        )  # fmt: skip
    return table


def markdown_table(rows: list[Row], batch_size: int) -> str:
    """The same table for the run's artifact, with what each variant's layers became."""
    head = ("| variant | accuracy | drop | worst recall drop | agreement | size | latency b1 | "
            f"latency b{batch_size} | registered | detail |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        lines.append(
            f"| {row.variant} | {row.accuracy:.4f} | {row.drop:+.4f} | {row.worst_recall_drop} | "
            f"{row.agreement:.4f} | "
            f"{size_text(row.size_bytes)} | {row.latency_b1_ms * 1000:.0f} us | "
            f"{row.latency_batch_ms * 1000:.0f} us | {row.registered} | {row.detail} |"
        )
    return "\n".join(lines) + "\n"
