"""`precision auto`: bf16 autocast only where the hardware multiplies bfloat16 natively, and the run says which."""

from __future__ import annotations

import json

import pytest
import torch

from robovla.errors import RobovlaError
from robovla.train import TrainConfig, train
from robovla.train import precision as precision_module
from robovla.train.precision import cpu_has_native_bf16, resolve_precision

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"  # emulates bfloat16: about 1 GFLOP/s
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_native_bfloat16_is_read_from_the_cpu_flags():
    assert not cpu_has_native_bf16(AVX2_ONLY)
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    assert not cpu_has_native_bf16("model name\t: avx512_bf16 in a name, not a flag\n")


def test_auto_follows_the_hardware_and_an_explicit_choice_stands(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"


def test_a_run_records_the_precision_it_computed_in(tmp_path, monkeypatch):
    from test_train import make_dataset

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    data = make_dataset(tmp_path / "data", episodes=2, frames=4)
    train(TrainConfig(preset="tiny", datasets=[str(data)], out=str(tmp_path / "run"), steps=1, batch_size=2,
                      save_every=0, progress=False))
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["precision"] == "fp32"
    with pytest.raises(RobovlaError, match="precision"):
        TrainConfig(precision="fp16")
