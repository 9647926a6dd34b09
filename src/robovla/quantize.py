"""Weight-only int8 / int4 quantization of the LLM that runs on a CPU (and bitsandbytes on CUDA).

Measured on this machine (docs/quantization.md): torchao's int8 weight-only tensors run on the CPU but leave
the embedding table in float; its int4 paths either need the `mslk` kernels (not installable here) or store
int4 values unpacked in int8 (no memory gain over int8); optimum-quanto's int4 runs ~100x slower than float
on the CPU. So on the CPU robovla uses its own small modules over PyTorch's own CPU weight-only kernels:
int8 per output channel, int4 per group of 64 packed two per byte, and an int8 embedding table. On CUDA the
reference's choice, bitsandbytes (LLM.int8 / NF4), is used.

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
    """Symmetric: [out, in] float -> (int8 values in [-qmax, qmax], float32 scales [out, in/group])."""
    out_features, in_features = weight.shape
    grouped = weight.detach().float().reshape(out_features, in_features // group, group)
    scales = grouped.abs().amax(dim=-1).clamp(min=1e-12) / _QMAX[bits]
    values = torch.round(grouped / scales[..., None]).clamp(-_QMAX[bits] - (bits == 4), _QMAX[bits])
    return values.to(torch.int8).reshape(out_features, in_features), scales


def quantize_uint4_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit: [out, in] -> (values 0..15 as int32, scale_and_zero [in/group, out, 2] float32).

    Dequantised weight = (value - 8) * scale + zero: the layout of PyTorch's CPU int4 matmul kernel.
    """
    out_features, in_features = weight.shape
    grouped = weight.detach().float().reshape(out_features, in_features // group, group)
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scale = (high - low).clamp(min=1e-8) / 15
    values = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, 15)
    zero = low + 8 * scale
    return values.to(torch.int32).reshape(out_features, in_features), torch.stack([scale.T, zero.T], dim=-1)


# Up to this many rows (tokens) the int8 kernel beats dequantise + float matmul (decode steps); measured.
_INT8_KERNEL_MAX_ROWS = 32


class QuantizedLinear(nn.Module):
    """A frozen linear layer with int8 (per-channel) or packed int4 (per-group) weights.

    int8 runs PyTorch's CPU weight-only kernel (`_weight_int8pack_mm`) for bf16 inputs with few rows (decode),
    and dequantises otherwise. int4 always runs PyTorch's CPU int4 kernel (`_weight_int4pack_mm_for_cpu`) in
    bf16: 3x faster than a bf16 matmul for one token, slower for a long prefill.
    """

    def __init__(self, linear: nn.Linear, bits: int, group_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits = linear.in_features, linear.out_features, bits
        if bits == 8:
            self.group = linear.in_features
            values, scales = quantize_groups(linear.weight, 8, self.group)
            self.register_buffer("qweight", values)
            self.register_buffer("scales", scales[:, 0].contiguous())
        else:
            self.group = _group_size(linear.in_features, group_size)
            if linear.in_features % 2 or self.group < 32:
                raise RobovlaError(f"int4 needs an input size divisible by 32, got {linear.in_features}")
            values, scale_zero = quantize_uint4_groups(linear.weight, self.group)
            self.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 2))
            self.register_buffer("scales", scale_zero.to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        if self.bits != 8:
            raise NotImplementedError("int4 weights live in the kernel's packed layout")
        return self.qweight.to(dtype) * self.scales[:, None].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.bits == 4:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(torch.bfloat16), self.qweight, self.group,
                                                             self.scales).to(x.dtype)
        elif x.dtype == torch.bfloat16 and rows.shape[0] <= _INT8_KERNEL_MAX_ROWS:
            out = torch._weight_int8pack_mm(rows, self.qweight, self.scales.to(torch.bfloat16))
        else:
            out = F.linear(rows, self.dequantized_weight(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

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
        if device.type != "cpu":
            raise RobovlaError(f"robovla's int8/int4 kernels run on the CPU, not {device.type}")
        _replace_cpu(lm, bits, group_size or 64)
    else:
        raise RobovlaError(f"unknown quantization backend {backend!r}; use auto, robovla or bitsandbytes")
    lm.requires_grad_(False)
    return model


def module_bytes(module: nn.Module) -> int:
    """Bytes of parameters and buffers (what the weights occupy in memory)."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)
