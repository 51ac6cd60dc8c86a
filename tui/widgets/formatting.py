"""How numbers read on screen: sizes, counts, durations, losses. Shared by every screen."""

from __future__ import annotations

import math


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


def model_label(model: str, lora: bool, world_size: int) -> str:
    """A run's model with how it was trained: 'gpt2', 'gpt2 +LoRA', 'gpt2 ×4' (4 processes).

    Two runs of the same model differ most in these two; the runs list would
    otherwise show them alike.
    """
    label = f"{model} +LoRA" if lora else model
    return f"{label} ×{world_size}" if world_size > 1 else label
