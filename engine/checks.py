"""The checks a setting's value goes through, and the words a person reads when it fails.

Training, generation, LoRA and evaluation settings all ask these, so a bad
number reads the same whichever form or flag it came from: the value as
given, and what to use instead. No torch here: settings are checked before
it loads.
"""

from __future__ import annotations

import math

from engine.errors import SettingsError


def check_text(name: str, value: object) -> None:
    """Refuse a missing or blank text setting."""
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(name, "is required: give a non-empty value.")


def check_int(name: str, value: object, minimum: int, maximum: int | None = None, hint: str = "") -> None:
    """Refuse anything but a whole number from ``minimum`` (to ``maximum``); a bool is not a number here."""
    allowed = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(name, f"{value!r} is not a whole number; use a whole number {allowed}{hint}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise SettingsError(name, f"{value} is out of range; use a whole number {allowed}{hint}.")


def check_number(
    name: str,
    value: object,
    minimum: float,
    *,
    above: bool = False,
    below: float | None = None,
    maximum: float | None = None,
    unit: str = "",
    hint: str = "",
) -> None:
    """Refuse anything but a finite number from ``minimum`` (or ``above`` it), under ``below`` or up to ``maximum``.

    NaN and infinities are refused: every range check would pass them or fail them by accident.
    """
    allowed = f"above {minimum:g}" if above else f"at least {minimum:g}"
    if below is not None:
        allowed += f" and below {below:g}"
    if maximum is not None:
        allowed += f" and at most {maximum:g}"
    allowed += unit
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(name, f"{value!r} is not a number; use a number {allowed}{hint}.")
    if (
        value < minimum
        or (above and value == minimum)
        or (below is not None and value >= below)
        or (maximum is not None and value > maximum)
    ):
        raise SettingsError(name, f"{value:g} is out of range; use a number {allowed}{hint}.")
