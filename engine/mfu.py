"""Model FLOPs utilisation: how much of a GPU's arithmetic a training run turns into model.

MFU is the number people compare training speed by across hardware (PaLM,
appendix B; nanoGPT's ``estimate_mfu``): the FLOPs the model needs per
token, times tokens per second, over the GPU's dense bf16 peak. It counts
only the model's own arithmetic, not recomputation or padding, so it is
honest about wasted work. No torch here: the trainer passes in numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense bf16 tensor-core peaks, in FLOP/s, from the vendors' data sheets (no sparsity).
# Matched against the CUDA device name, first match wins, so the longer names come first.
GPU_BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs to know of a GPT-2-style model."""

    parameters: int  # trainable and frozen, embeddings included (they are matmuls in the LM head)
    layers: int
    width: int  # n_embd: the attention's query/key width summed over heads
    context: int  # tokens each position attends over (the block size trained at)


def training_flops_per_token(shape: ModelShape) -> float:
    """Forward and backward FLOPs to train on one token: 6 per parameter, plus attention.

    6N counts a multiply-add (2 FLOPs) per weight in the forward pass and twice that
    in the backward. Attention's scores and weighted sum add 2 * 2 * layers * context
    * width in the forward pass, so 12 * layers * context * width for all three.
    """
    return 6 * shape.parameters + 12 * shape.layers * shape.context * shape.width


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like ``torch.cuda.get_device_name()``; None if not in the table."""
    upper = device_name.upper()
    for name, peak in GPU_BF16_PEAKS:
        if name in upper:
            return peak
    return None


def model_flops_utilisation(shape: ModelShape, tokens_per_second: float, device_name: str) -> float | None:
    """The fraction of the GPU's peak spent on the model (0.4 is 40 % MFU); None for a GPU not in the table."""
    peak = peak_flops(device_name)
    if peak is None:
        return None
    return training_flops_per_token(shape) * tokens_per_second / peak
