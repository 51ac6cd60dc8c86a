"""The logit lens as a table: a row per layer, from the embeddings to the model's output.

Each row shows the entropy of that layer's prediction (bits), the
probability and rank it gives the token that is really at the position
("actual"), and its likeliest tokens, each coloured on the probability
scale, the actual token underlined. The Inspect screen and ``lmwb lens``
both show it; the screen asks for as many tokens as its width holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

from tui.widgets.scored_text import probability_text, token_label
from tui.widgets.token_stream import probability_colour

if TYPE_CHECKING:
    from engine.inspection import LensReadout

TOKEN_WIDTH = 8  # cells of a token's label in a cell, unless asked for more


def layer_label(layer: int, layers: int) -> str:
    """emb for the embeddings, the block's number, and "N out" for the last (the model's own output)."""
    if layer == 0:
        return "emb"
    return f"{layer} out" if layer == layers - 1 else str(layer)


def lens_table(readout: LensReadout, top: int | None = None, token_width: int = TOKEN_WIDTH) -> Table:
    """The readout's layers as rows, each with its ``top`` likeliest tokens (all it holds by default)."""
    shown = len(readout.layers[0].top) if top is None else top
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    table.add_column("layer", no_wrap=True)
    table.add_column("H bits", justify="right", no_wrap=True)
    if readout.target is not None:
        table.add_column("actual", justify="right", no_wrap=True)
    for rank in range(1, shown + 1):
        table.add_column(f"#{rank}", no_wrap=True)
    for layer in readout.layers:
        cells = [Text(layer_label(layer.layer, len(readout.layers)), style="bold"), Text(f"{layer.entropy:.1f}")]
        if layer.target_probability is not None:
            cells.append(
                Text(
                    f"{probability_text(layer.target_probability)} #{layer.target_rank}",
                    style=probability_colour(layer.target_probability),
                )
            )
        for guess in layer.top[:shown]:
            cell = Text(token_label(guess.text, token_width), style=probability_colour(guess.probability))
            if readout.target is not None and guess.token_id == readout.target[0]:
                cell.stylize("bold underline")
            cell.append(f" {probability_text(guess.probability)}", style="dim")
            cells.append(cell)
        table.add_row(*cells)
    return table
