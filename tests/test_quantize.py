"""Weight-only int8/int4 quantization of the LLM on the CPU: packing, memory, agreement with float."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import robovla
import robovla.quantize
from conftest import CONFORMANCE, TINY_CHECKPOINT, case_image
from robovla.quantize import QuantizedLinear, module_bytes, quantize_groups, quantize_uint4_groups

CASES = json.loads((CONFORMANCE / "cases.json").read_text())["cases"]


def test_int4_groups_and_the_packed_kernel_against_the_definition():
    """Asymmetric 4-bit groups: 16 levels from each group's minimum to its maximum. The kernel's output must be
    x @ W' + b with W' rebuilt here from that definition alone, not from the quantizer's own scales."""
    torch.manual_seed(1)
    weight = torch.randn(16, 128)
    values, scale_zero = quantize_uint4_groups(weight, 64)
    grouped = weight.reshape(16, 2, 64)
    low, high = grouped.amin(-1), grouped.amax(-1)
    step = (high - low) / 15
    expected_values = torch.round((grouped - low[..., None]) / step[..., None]).reshape(16, 128)
    assert torch.equal(values.float(), expected_values) and values.min() == 0 and values.max() == 15
    rebuilt = (low[..., None] + expected_values.reshape(16, 2, 64) * step[..., None]).reshape(16, 128)
    assert (rebuilt - weight).abs().max() <= step.max() / 2 + 1e-6
    linear = nn.Linear(128, 16)
    linear.weight.data.copy_(weight)
    x = torch.randn(3, 128)
    out = QuantizedLinear(linear, 4, group_size=64)(x.to(torch.bfloat16)).float()
    reference = x.to(torch.bfloat16).float() @ rebuilt.T + linear.bias.detach()
    assert torch.allclose(out, reference, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("bits, tolerance", [(8, 0.01), (4, 0.15)])
@pytest.mark.parametrize("dtype, rows", [(torch.float32, 10), (torch.bfloat16, 1), (torch.bfloat16, 300)])
def test_quantized_linear_error_is_bounded(bits, tolerance, dtype, rows):
    """Every kernel path (int8 kernel for short bf16 inputs, dequantise otherwise, int4 kernel) is accurate."""
    torch.manual_seed(0)
    linear = nn.Linear(256, 64)
    quantized = QuantizedLinear(linear, bits, group_size=64)
    x = torch.randn(2, rows, 256)
    reference = linear(x)
    out = quantized(x.to(dtype)).float()
    assert out.shape == reference.shape
    relative = (out - reference).norm() / reference.norm()
    assert relative < tolerance + (0.02 if dtype == torch.bfloat16 else 0.0)


def test_symmetric_group_quantization_ranges():
    weight = torch.randn(64, 256)
    values, scales = quantize_groups(weight, 8, 64)
    assert values.abs().max() <= 127 and scales.shape == (64, 4)


def test_memory_reduction_of_the_llm():
    sizes = {}
    for mode in (None, "int8", "int4"):
        model = robovla.build_model("small", device="cpu") if mode is None else robovla.build_model("small")
        if mode:
            robovla.quantize.quantize_language_model(model, mode)
        sizes[mode] = module_bytes(model.language_model)
    assert sizes[None] / sizes["int8"] >= 3.5
    assert sizes[None] / sizes["int4"] >= 6.0


@pytest.mark.parametrize("mode, min_agreement", [("int8", 0.7), ("int4", 0.0)])
def test_quantized_actions_agree_with_float(tiny_vla, mode, min_agreement):
    quantized = robovla.load_pretrained(TINY_CHECKPOINT, quantization=mode)
    images = [case_image(c) for c in CASES]
    texts = [c["instruction"] for c in CASES]
    actions_only = robovla.Decoding(restrict_to_actions=True)
    reference = tiny_vla.predict(images, texts, "bridge_orig", decoding=actions_only)
    ours = quantized.predict(images, texts, "bridge_orig", decoding=actions_only)
    # The conformance model is random with tiny top-2 margins (0.04); trained policies are measured in benchmarks.
    agreement = float(np.mean(reference.token_ids == ours.token_ids))
    assert agreement >= min_agreement
    assert np.all(np.isfinite(ours.actions))


def test_unknown_mode_is_an_error():
    with pytest.raises(robovla.RobovlaError, match="int8, int4"):
        robovla.load_pretrained(TINY_CHECKPOINT, quantization="int3")
