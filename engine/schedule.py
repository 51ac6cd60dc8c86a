"""The learning-rate schedule and the optimizer, as nanoGPT sets them up.

``get_lr`` is linear warmup then cosine decay to a floor over the run's steps;
``get_lr_on_time`` is the same curve laid over how much of its plan a run
planned on time has spent (its time budget, or its passes over the data).
``configure_optimizer`` is AdamW with weight decay on matrices and embeddings
only.
"""

from __future__ import annotations

import math

import torch

from engine.training_config import TrainingConfig


def get_lr(step: int, config: TrainingConfig, max_steps: int) -> float:
    """Learning rate for the 0-based optimizer step: linear warmup, then cosine down to min at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    if step >= max_steps:
        return config.min_learning_rate
    decay_ratio = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
    coefficient = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return config.min_learning_rate + coefficient * (config.learning_rate - config.min_learning_rate)


def get_lr_on_time(step: int, config: TrainingConfig, spent: float) -> float:
    """Learning rate for a run planned on time: linear warmup over steps, then cosine down to min as its plan ends.

    The decay follows ``spent``, the fraction of the plan done: of the time
    budget (every session, evaluations and checkpoints included), or of the
    passes over the data ``max_epochs`` allows if those end first. So the
    rate is at its minimum when the run ends, however fast its steps turn out.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    spent = min(1.0, max(0.0, spent))
    coefficient = 0.5 * (1.0 + math.cos(math.pi * spent))
    return config.min_learning_rate + coefficient * (config.learning_rate - config.min_learning_rate)


def configure_optimizer(model: torch.nn.Module, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (2-D and up) only, as nanoGPT does.

    Biases and LayerNorm gains are not decayed. Only trainable parameters are
    handed over, so a model with frozen parts (adapters) trains just its
    trainable ones.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=True if device.type == "cuda" else None,
    )
