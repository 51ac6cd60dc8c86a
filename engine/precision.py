"""What a forward pass computes in: the precision a run asked for, resolved for its device, and its autocast.

``engine.devices`` holds the names (auto, fp32, bf16, fp16) and imports no
torch; this module turns a name into what torch does with it.
"""

from __future__ import annotations

import contextlib

import torch

from engine.errors import SettingsError


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 autocast on GPUs that have it, fp16 with a gradient scaler on older GPUs, fp32 elsewhere."""
    cuda_has_bf16 = device.type == "cuda" and _native_bf16(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_has_bf16 else "fp16"
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not cuda_has_bf16:
        raise SettingsError(
            "precision", "this GPU has no native bf16 (torch would emulate it, slower than fp16); use fp16 or auto."
        )
    return precision


def _native_bf16(device: torch.device) -> bool:
    """True on GPUs that compute in bf16 (Ampere and later); torch emulates it on older ones, slowly."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes; weights and optimizer state stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
