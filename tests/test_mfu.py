"""The MFU formula, against cases worked by hand."""

from __future__ import annotations

import pytest

from engine.mfu import ModelShape, model_flops_utilisation, peak_flops, training_flops_per_token

GPT2_124M = ModelShape(parameters=124_000_000, layers=12, width=768, context=1024)


def test_flops_per_token_is_six_per_parameter_plus_attention() -> None:
    # 6 * 124e6 = 744e6; 12 * 12 layers * 1024 context * 768 wide = 113,246,208.
    assert training_flops_per_token(GPT2_124M) == 744_000_000 + 113_246_208


def test_mfu_of_gpt2_small_on_an_a100() -> None:
    # 857,246,208 FLOPs per token * 150,000 tokens/s = 1.2859e14 FLOP/s, over 312e12.
    mfu = model_flops_utilisation(GPT2_124M, 150_000, "NVIDIA A100-SXM4-80GB")
    assert mfu == pytest.approx(857_246_208 * 150_000 / 312e12)
    assert mfu == pytest.approx(0.4121, abs=1e-4)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA GeForce RTX 3090", 71e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
    ],
)
def test_known_gpus_have_their_peak(name: str, peak: float) -> None:
    assert peak_flops(name) == peak


def test_an_unknown_gpu_has_no_mfu() -> None:
    assert peak_flops("Tesla T4") is None
    assert model_flops_utilisation(GPT2_124M, 1e5, "Tesla T4") is None
