"""Checkpoint I/O: bit-exact round trips in the reference layout, atomic saves, and clear errors on bad folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import robovla
from conftest import CONFORMANCE, TINY_CHECKPOINT, case_image
from test_architecture import read_key_list


def test_save_load_round_trip_is_bit_exact(tiny_vla, tmp_path):
    out = robovla.save_pretrained(tiny_vla, tmp_path / "ckpt", max_shard_bytes=1_000_000)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "dataset_statistics.json",
                 "generation_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).exists(), name
    loaded = robovla.load_pretrained(out)
    original = tiny_vla.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert loaded.config.norm_stats == tiny_vla.config.norm_stats
    image = case_image(json.loads((CONFORMANCE / "cases.json").read_text())["cases"][0])
    a = tiny_vla.predict_action(image, "put spoon on towel", "bridge_orig", return_token_ids=True)
    b = loaded.predict_action(image, "put spoon on towel", "bridge_orig", return_token_ids=True)
    assert a[1].tolist() == b[1].tolist() and np.array_equal(a[0], b[0])


def test_saved_checkpoint_uses_reference_key_layout(tiny_vla, tmp_path):
    out = robovla.save_pretrained(tiny_vla, tmp_path / "ckpt", dtype=torch.bfloat16)
    tensors = load_file(str(out / "model.safetensors"))
    reference = dict(read_key_list(CONFORMANCE / "tiny-openvla-keys.txt"))
    assert {k: list(v.shape) for k, v in tensors.items()} == reference
    assert all(v.dtype == torch.bfloat16 for v in tensors.values())
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["torch_dtype"] == "bfloat16"
    assert config["timm_override_kwargs"] == json.loads((TINY_CHECKPOINT / "config.json").read_text())[
        "timm_override_kwargs"
    ]
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["tvf_normalize_params"][0]["mean"] == [0.484375, 0.455078125, 0.40625]
    # bf16 weights from the conformance checkpoint survive float32 -> bf16 exactly
    original = load_file(str(TINY_CHECKPOINT / "model-00001-of-00003.safetensors"))
    for name, tensor in original.items():
        assert torch.equal(tensors[name], tensor), name


def test_failed_save_keeps_previous_checkpoint(tiny_vla, tmp_path, monkeypatch):
    target = robovla.save_pretrained(tiny_vla, tmp_path / "ckpt")
    before = sorted(p.name for p in target.iterdir())

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        robovla.save_pretrained(tiny_vla, target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind
    robovla.load_pretrained(target)


def test_auto_map_is_ignored_and_no_remote_code_needed(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(TINY_CHECKPOINT, folder)
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("*.py"))
    model = robovla.load_pretrained(folder)
    assert "auto_map" not in model.config.to_hf_dict()


@pytest.fixture
def broken(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(TINY_CHECKPOINT, folder)
    return folder


def test_missing_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(robovla.RobovlaError, match="config.json is missing"):
        robovla.load_pretrained(broken)


def test_missing_folder(tmp_path):
    with pytest.raises(robovla.RobovlaError, match="not found"):
        robovla.load_pretrained(tmp_path / "nope")


def test_missing_shard(broken):
    (broken / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(robovla.RobovlaError, match="missing: model-00002-of-00003.safetensors"):
        robovla.load_pretrained(broken)


@pytest.mark.parametrize("keep_bytes", [5, 200, 400_000])
def test_truncated_shard(broken, keep_bytes):
    shard = broken / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:keep_bytes])
    with pytest.raises(robovla.RobovlaError, match="model-00003-of-00003.safetensors: corrupt or truncated"):
        robovla.load_pretrained(broken)


def test_garbage_shard(broken):
    (broken / "model-00001-of-00003.safetensors").write_bytes(b"\x80\x04not a safetensors file" * 10)
    with pytest.raises(robovla.RobovlaError, match="corrupt or truncated"):
        robovla.load_pretrained(broken)


def test_wrong_tensor_shape_names_both_shapes(broken):
    shard = broken / "model-00003-of-00003.safetensors"
    tensors = load_file(str(shard))
    tensors["projector.fc3.bias"] = torch.zeros(33, dtype=torch.bfloat16)
    save_file(tensors, str(shard))
    with pytest.raises(robovla.RobovlaError, match=r"'projector.fc3.bias' has shape \[33\].*expects \[32\]"):
        robovla.load_pretrained(broken)


def test_missing_tensor(broken):
    shard = broken / "model-00003-of-00003.safetensors"
    tensors = load_file(str(shard))
    del tensors["language_model.lm_head.weight"]
    save_file(tensors, str(shard))
    with pytest.raises(robovla.RobovlaError, match="missing from the weights: language_model.lm_head.weight"):
        robovla.load_pretrained(broken)


def test_dataset_statistics_merge_into_norm_stats(broken):
    config = json.loads((broken / "config.json").read_text())
    stats = config.pop("norm_stats")
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "dataset_statistics.json").write_text(json.dumps(stats))
    model = robovla.load_pretrained(broken)
    assert sorted(model.norm_stats) == ["bridge_orig", "toy_kitchen"]
