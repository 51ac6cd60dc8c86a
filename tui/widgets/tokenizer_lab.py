"""The tokenizer lab's answer as people read it: one layout for ``lmwb datasets tokenizers`` and the Datasets screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from tui.widgets.formatting import human_bytes, human_count

if TYPE_CHECKING:
    from engine.tokenizer_lab import TokenizerComparison

RECOMMENDED_MARK = "★"


def tokenizer_lab_report(comparison: TokenizerComparison) -> Group:
    """The advice first, then the table (its row starred, to read without colour), what its columns mean, notes."""
    from engine.tokenizer_lab import RARE_BELOW

    table = Table(
        title=f"Tokenizers on {comparison.dataset} ({human_bytes(comparison.data_bytes)})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0, 0, 1),  # with the box's blank divider, two spaces between columns
        pad_edge=False,
    )
    for header in ("tokenizer", "vocab", "bytes/token", f"seen <{RARE_BELOW}×", "embeddings"):
        table.add_column(header, justify="left" if header == "tokenizer" else "right")
    for measure in comparison.measures:
        table.add_row(
            f"{measure.name} {RECOMMENDED_MARK}" if measure.recommended else measure.name,
            f"{measure.vocabulary:,}",
            f"{measure.bytes_per_token:.2f}",
            f"{measure.rare:,} ({measure.rare_fraction:.0%})",
            human_count(measure.embedding_parameters),
            style="bold" if measure.recommended else None,
        )
    legend = Text(
        f"seen <{RARE_BELOW}×: vocabulary entries the data shows fewer than {RARE_BELOW} times (their embeddings "
        f"are barely learned). embeddings: vocab × {comparison.width} parameters, at scratch:{comparison.preset}'s "
        "width.",
        style="dim",
    )
    advice = Text(f"{RECOMMENDED_MARK} {comparison.recommendation}", style="bold")
    notes = [Text(note, style="dim") for note in comparison.notes]
    return Group(advice, Text(), table, legend, *notes)
