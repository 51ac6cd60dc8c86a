"""How numbers and texts read on screen: sizes, counts, durations, losses, what changed. Shared by every screen."""

from __future__ import annotations

import difflib
import math
import re

from rich.text import Text


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KB'."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def human_count(count: int) -> str:
    """1234567 -> '1.23 M'; small numbers keep their digits."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.2f} B"
    if count >= 1_000_000:
        return f"{count / 1e6:.2f} M"
    if count >= 10_000:
        return f"{count / 1e3:.1f} k"
    return f"{count:,}"


def human_duration(seconds: float | None) -> str:
    """75 -> '1:15'; 3725 -> '1:02:05'; None -> '–'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def loss_text(loss: float | None) -> str:
    """A loss with four significant digits, or '–' when there is none yet."""
    return "–" if loss is None else f"{loss:.4g}"


def two_lines(title: str) -> str:
    """A column title over two lines, broken at the space or underscore nearest its middle, for a narrower column.

    "best val loss" becomes "best val" over "loss", "learning_rate" "learning_" over "rate".
    """
    breaks = [index for index, character in enumerate(title) if character in " _"]
    if not breaks:
        return title
    middle = min(breaks, key=lambda index: abs(2 * index - len(title)))
    cut = middle if title[middle] == " " else middle + 1  # a space goes, an underscore stays
    return f"{title[:cut]}\n{title[middle + 1 :]}"


def model_label(model: str, lora: bool, world_size: int) -> str:
    """A run's model with how it was trained: 'gpt2', 'gpt2 +LoRA', 'gpt2 ×4' (4 processes).

    Two runs of the same model differ most in these two; the runs list would
    otherwise show them alike.
    """
    label = f"{model} +LoRA" if lora else model
    return f"{label} ×{world_size}" if world_size > 1 else label


# The words a probe's completion changed since the step before: underlined too, so they show without colour.
CHANGED_STYLE = "underline black on yellow"
LINE_BREAK = "↵"  # how a line break in a completion shows
# How the spaces a completion ends with show: an early model often writes only spaces, which would look
# like no completion at all.
TRAILING_SPACE = "·"
_WORDS = re.compile(r"(\s*)(\S+)")  # each word with the spaces before it


def changed_words(previous: str | None, text: str) -> Text:
    """``text`` with the words that are not in ``previous`` highlighted (a word diff, as difflib finds it).

    A probe's completion against the one at the step before shows what the
    model now writes differently; with no step before (None), nothing is.
    Words are compared, not the spaces between them; the spaces inside a run
    of changed words are highlighted with it. Line breaks show as LINE_BREAK:
    a completion is a few dozen tokens, and an early model's runs of empty
    lines would push the rest out of sight. The spaces it ends with show as
    TRAILING_SPACE, dim, so a completion of only spaces is seen to be one.
    """
    pieces = _WORDS.findall(text)
    changed: set[int] = set()
    if previous is not None:
        before = [word for _, word in _WORDS.findall(previous)]
        matcher = difflib.SequenceMatcher(a=before, b=[word for _, word in pieces], autojunk=False)
        for tag, _, _, start, end in matcher.get_opcodes():
            if tag != "equal":
                changed.update(range(start, end))
    shown = Text()
    for index, (spaces, word) in enumerate(pieces):
        spaces = spaces.replace("\n", LINE_BREAK)
        if index in changed and index - 1 in changed:
            shown.append(spaces + word, style=CHANGED_STYLE)
        elif index in changed:
            shown.append(spaces)
            shown.append(word, style=CHANGED_STYLE)
        else:
            shown.append(spaces + word)
    tail = text[sum(len(spaces) + len(word) for spaces, word in pieces) :]
    shown.append(tail.replace("\n", LINE_BREAK).replace(" ", TRAILING_SPACE), style="dim")
    return shown
