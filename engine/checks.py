"""The checks a setting's value goes through, and the words a person reads when it fails.

Training, generation, LoRA and evaluation settings all ask these, so a bad
number reads the same whichever form or flag it came from: the value as
given, and what to use instead. No torch here: settings are checked before
it loads.
"""

from __future__ import annotations

import math
from pathlib import Path

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


def read_text_file(name: str, path: str | Path) -> str:
    """The text of a UTF-8 file (a text to score, say); SettingsError(name) saying what is wrong with it.

    As ``read_utf8_file``, and an empty file is refused too.
    """
    text = read_utf8_file(name, path)
    if not text:
        raise SettingsError(name, f"{path} is empty; give a file with some text in it.")
    return text


def read_utf8_file(name: str, path: str | Path) -> str:
    """The text of a UTF-8 file, perhaps empty; SettingsError(name) saying why it cannot be read.

    A missing file, a folder and bytes that are not UTF-8 (with the line and
    the byte offset) are refused. A UTF-8 byte order mark is not part of the text.
    """
    where = Path(path).expanduser()
    try:
        data = where.read_bytes()
    except IsADirectoryError:
        raise SettingsError(name, f"{path} is a folder; give a text file.") from None
    except FileNotFoundError:
        raise SettingsError(name, f"there is no file {path}; check the path.") from None
    except OSError as error:
        raise SettingsError(name, f"cannot read {path}: {error.strerror}.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SettingsError(
            name,
            f"{path} is not UTF-8 text: line {line} holds the byte 0x{data[error.start]:02x} "
            f"(at byte offset {error.start}); save it as UTF-8.",
        ) from None
