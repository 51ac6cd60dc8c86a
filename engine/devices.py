"""How a device and a precision are spelled: the one grammar the CLI, the app, training and loading share.

Reading a name needs no torch (so settings are checked before torch loads);
whether the device exists on this machine is ``engine.models.pick_device``'s
question.
"""

from __future__ import annotations

import re

from engine.errors import SettingsError

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: fp32 on the CPU, bf16 (or fp16) autocast on a GPU
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_name(text: object) -> str:
    """The canonical spelling of a device name ("CUDA:1 " -> "cuda:1"); SettingsError("device") for nonsense."""
    wanted = text.strip().lower() if isinstance(text, str) else ""
    if not _DEVICE.fullmatch(wanted):
        raise SettingsError("device", f"{text!r} is not a device; use {DEVICES_HELP}.")
    return wanted


def precision_name(text: object) -> str:
    """The canonical spelling of a precision ("BF16" -> "bf16"); SettingsError("precision") for nonsense."""
    wanted = text.strip().lower() if isinstance(text, str) else ""
    if wanted not in PRECISIONS:
        raise SettingsError("precision", f"{text!r} is not a precision; use one of {', '.join(PRECISIONS)}.")
    return wanted
