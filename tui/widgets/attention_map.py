"""Where the model looked as it wrote a token: a heat row per layer, a strip per head.

Each layer is a line; on it, each head is a strip of bars over the tokens
before the chosen one, oldest on the left: the first bar sums everything
older than the strip can show, the others are the most recent tokens, whose
texts the last line lists. A bar's height is the square root of the share
of the head's attention (a full block is all of it, half a block a quarter),
so a head that spreads its attention thinly still shows where. The strips take what width there
is, so a 4-head model shows its last 20 tokens in 100 columns and GPT-2's
12 heads their last 5; a model with too many heads for the width says so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

if TYPE_CHECKING:
    from engine.attention import TokenAttention

BARS = "·▁▂▃▄▅▆▇█"  # a dot for nothing keeps an empty strip visible
MIN_STRIP = 3  # the older tokens' bar and at least two recent tokens


def attention_rows(attention: TokenAttention, width: int) -> Text:
    """The map as lines of text, at most ``width`` columns wide."""
    weights = attention.weights
    layers, heads, earlier = weights.shape
    label = len(f"L{layers} ")
    room = (width - label) // heads - 1  # columns for one head's strip, a space between strips
    title = f"attention writing {attention.token!r} · {layers} layers × {heads} heads · bar height √share"
    rendered = Text(title[:width], style="bold")
    if room < MIN_STRIP:
        rendered.append(f"\n{heads} heads need {label + heads * (MIN_STRIP + 1)} columns; this is {width} wide.")
        return rendered
    recent = earlier if earlier <= room else room - 1
    has_older = earlier > recent
    older = weights[:, :, : earlier - recent].sum(-1)
    shown = weights[:, :, earlier - recent :]
    columns = recent + has_older
    rendered.append("\n" + " " * label)
    for head in range(heads):
        rendered.append(f"h{head + 1}"[:columns].ljust(columns + 1), style="dim")
    for layer in range(layers):
        rendered.append(f"\nL{layer + 1}".ljust(label + 1), style="dim")
        for head in range(heads):
            if has_older:
                rendered.append(_bar(float(older[layer, head])), style="dim")
            rendered.append("".join(_bar(float(w)) for w in shown[layer, head]), style="bold")
            rendered.append(" ")
    texts = " ".join(repr(text) for text in attention.tokens[earlier - recent :])
    rendered.append(("\n" + ("older, then " if has_older else "") + texts)[: width + 1], style="dim")
    return rendered


def _bar(weight: float) -> str:
    """A bar as tall as the square root of the weight (0 to 1); any weight above half a percent shows."""
    if weight < 0.005:
        return BARS[0]
    return BARS[max(1, min(round(math.sqrt(weight) * 8), 8))]


class AttentionMap(Static):
    """The attention of one token, drawn to the widget's width (redrawn when it changes)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._shown: TokenAttention | None = None

    def show(self, attention: TokenAttention) -> None:
        """Draw where each head looked as the model wrote the attention's token."""
        self._shown = attention
        self._draw()

    def say(self, message: str) -> None:
        """A line instead of a map (computing, or why there is none)."""
        self._shown = None
        self.update(Text(message, style="dim italic"))

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self._shown is not None and self.content_size.width > 0:
            self.update(attention_rows(self._shown, self.content_size.width))
