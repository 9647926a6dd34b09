"""Weight-only int8 / int4 quantization of the LLM that runs on a CPU (and bitsandbytes on CUDA).

Measured on this machine (docs/quantization.md): torchao's int8 weight-only tensors run on the CPU but leave
the embedding table in float; its int4 paths either need the `mslk` kernels (not installable here) or store
int4 values unpacked in int8 (no memory gain over int8); optimum-quanto's int4 runs ~100x slower than float
on the CPU. So on the CPU robovla uses its own small modules: symmetric per-group scales, int8 values, or
int4 values packed two per byte, dequantised on the fly inside `forward`. On CUDA the reference's choice,
bitsandbytes (LLM.int8 / NF4), is used.

The vision towers and the projector stay in the base dtype (they are ~10% of openvla-7b and most sensitive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robovla.errors import RobovlaError

MODES = ("int8", "int4")
_QMAX = {8: 127, 4: 7}


def _group_size(in_features: int, requested: int) -> int:
    group = min(requested, in_features)
    while in_features % group:
        group //= 2
    return max(group, 1)


def quantize_groups(weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 values in [-qmax, qmax], float32 scales [out, in/group])."""
    out_features, in_features = weight.shape
    grouped = weight.detach().float().reshape(out_features, in_features // group, group)
    scales = grouped.abs().amax(dim=-1).clamp(min=1e-12) / _QMAX[bits]
    values = torch.round(grouped / scales[..., None]).clamp(-_QMAX[bits] - (bits == 4), _QMAX[bits])
    return values.to(torch.int8).reshape(out_features, in_features), scales


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], [out, in] (in even) -> uint8 [out, in/2], two nibbles per byte."""
    shifted = (values.to(torch.int16) + 8).to(torch.uint8)
    return shifted[:, 0::2] | (shifted[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], packed.shape[1] * 2)


class QuantizedLinear(nn.Module):
    """A frozen linear layer holding int8 or packed-int4 weights with per-group scales."""

    def __init__(self, linear: nn.Linear, bits: int, group_size: int) -> None:
        super().__init__()
        if bits == 4 and linear.in_features % 2:
            raise RobovlaError(f"int4 needs an even input size, got {linear.in_features}")
        self.in_features, self.out_features, self.bits = linear.in_features, linear.out_features, bits
        self.group = _group_size(linear.in_features, group_size)
        values, scales = quantize_groups(linear.weight, bits, self.group)
        self.register_buffer("qweight", pack_int4(values) if bits == 4 else values)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        values = unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        grouped = values.reshape(self.out_features, -1, self.group).to(dtype) * self.scales[..., None].to(dtype)
        return grouped.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}, group={self.group}"


class QuantizedEmbedding(nn.Module):
    """An int8 embedding table with one scale per row; rows are dequantised only when looked up."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding_dim = embedding.embedding_dim
        self.padding_idx = embedding.padding_idx
        values, scales = quantize_groups(embedding.weight, 8, embedding.embedding_dim)
        self.register_buffer("qweight", values)
        self.register_buffer("scales", scales[:, 0].contiguous())
        self._dtype = embedding.weight.dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.qweight).to(self._dtype) * self.scales[ids, None].to(self._dtype)


def _replace_cpu(module: nn.Module, bits: int, group_size: int) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, QuantizedLinear(child, bits, group_size))
        elif isinstance(child, nn.Embedding):
            setattr(module, name, QuantizedEmbedding(child))
        else:
            _replace_cpu(child, bits, group_size)


def _replace_bitsandbytes(module: nn.Module, bits: int) -> None:
    import bitsandbytes as bnb

    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            device = child.weight.device
            if bits == 8:
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(child.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=child.weight.dtype, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data.cpu(), requires_grad=False)
            setattr(module, name, new.to(device))
        else:
            _replace_bitsandbytes(child, bits)


def quantize_language_model(model: nn.Module, mode: str, group_size: int | None = None, backend: str = "auto"):
    """Quantize `model.language_model` in place (weights only); returns the model.

    backend: "auto" (bitsandbytes on CUDA, robovla's kernels elsewhere), "robovla" or "bitsandbytes".
    """
    if mode not in MODES:
        raise RobovlaError(f"unknown quantization {mode!r}; use one of {', '.join(MODES)}")
    bits = 8 if mode == "int8" else 4
    lm = model.language_model
    device = next(lm.parameters()).device
    if backend == "auto":
        backend = "bitsandbytes" if device.type == "cuda" else "robovla"
    if backend == "bitsandbytes":
        if device.type != "cuda":
            raise RobovlaError("the bitsandbytes backend needs a CUDA device; use backend='robovla' on a CPU")
        _replace_bitsandbytes(lm, bits)
    elif backend == "robovla":
        _replace_cpu(lm, bits, group_size or (128 if bits == 8 else 64))
    else:
        raise RobovlaError(f"unknown quantization backend {backend!r}; use auto, robovla or bitsandbytes")
    lm.requires_grad_(False)
    return model


def module_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers (what the weights occupy in memory)."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)
