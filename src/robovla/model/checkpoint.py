"""Checkpoints in the Hugging Face layout of `openvla/openvla-7b`: read safely, write atomically.

Weights are read with safetensors only (never pickle); `auto_map` is ignored (no remote code). Saving writes
into a temporary sibling folder and renames it into place, so an interrupted save never leaves a half-written
checkpoint and an existing one stays valid until the new one is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from robovla.config import VLAConfig
from robovla.errors import RobovlaError
from robovla.model.vla import VLA
from robovla.processing import ImageProcessorConfig, TextTokenizer, VLAProcessor

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


# ----------------------------------------------------------------------------------------------------- reading
def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise RobovlaError(f"{index}: not a valid safetensors index ({error})") from None
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise RobovlaError(f"{folder}: shard(s) listed in {INDEX_FILE} are missing: {', '.join(missing)}")
        return files
    if (folder / SINGLE_FILE).exists():
        return [folder / SINGLE_FILE]
    raise RobovlaError(f"{folder}: no weights found (expected {SINGLE_FILE} or {INDEX_FILE} with its shards)")


def iter_safetensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a checkpoint folder, shard by shard; corrupt or truncated files are a clear error."""
    from safetensors import safe_open

    for file in _weight_files(folder):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        except RobovlaError:
            raise
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise RobovlaError(f"{file}: corrupt or truncated safetensors file ({error})") from None


def read_norm_stats(folder: Path, config: VLAConfig) -> dict[str, Any] | None:
    """config.json's norm_stats, completed by dataset_statistics.json (the reference ships both)."""
    stats = dict(config.norm_stats or {})
    stats_file = folder / "dataset_statistics.json"
    if stats_file.exists():
        try:
            from_file = json.loads(stats_file.read_text())
        except json.JSONDecodeError as error:
            raise RobovlaError(f"{stats_file}: not valid JSON ({error})") from None
        for key, value in from_file.items():
            stats.setdefault(key, value)
    return stats or None


def load_processor(folder: Path, config: VLAConfig) -> VLAProcessor:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.exists():
        raise RobovlaError(f"{folder}: tokenizer.json is missing")
    tokenizer = TextTokenizer(tokenizer_file, pad_token_id=config.text_config.pad_token_id)
    preprocessor = folder / "preprocessor_config.json"
    image_config = None
    if preprocessor.exists():
        try:
            image_config = ImageProcessorConfig.from_hf_dict(json.loads(preprocessor.read_text()))
        except json.JSONDecodeError as error:
            raise RobovlaError(f"{preprocessor}: not valid JSON ({error})") from None
    return VLAProcessor.for_model(config, tokenizer, image_config)


def load_pretrained(
    path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    quantization: str | None = None,
) -> VLA:
    """Load a checkpoint folder in the openvla-7b Hugging Face layout (ours or the reference's).

    quantization: None, "int8" or "int4" (weight-only, LLM only; see robovla.quantize).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RobovlaError(f"checkpoint folder not found: {folder}")
    if not (folder / "config.json").exists():
        raise RobovlaError(f"{folder}: config.json is missing (not a checkpoint folder?)")
    dtype = resolve_dtype(dtype)
    if json.loads((folder / "config.json").read_text()).get("policy_type") == "diffusion":
        raise RobovlaError(f"{folder} holds a Diffusion Policy, not a VLA: load it with robovla.DiffusionPolicy.load")
    config = VLAConfig.from_json_file(folder / "config.json")
    config.norm_stats = read_norm_stats(folder, config)
    processor = load_processor(folder, config)

    with torch.device("meta"):
        model = VLA(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in iter_safetensors(folder):
        if name not in expected:
            raise RobovlaError(f"{folder}: unexpected tensor {name!r} (not part of this architecture)")
        if tensor.shape != expected[name]:
            raise RobovlaError(
                f"{folder}: tensor {name!r} has shape {list(tensor.shape)}, the config expects {list(expected[name])}"
            )
        state[name] = tensor.to(device=device, dtype=dtype)
    missing = [name for name in expected if name not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise RobovlaError(f"{folder}: {len(missing)} tensor(s) missing from the weights: {shown}")
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_rotary_buffers()
    model.processor = processor
    if quantization is not None:
        from robovla.quantize import quantize_language_model

        quantize_language_model(model, quantization)
    return model.eval()


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise RobovlaError(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
    return names[dtype]


# ----------------------------------------------------------------------------------------------------- writing
def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _tokenizer_side_files(tokenizer: TextTokenizer) -> dict[str, Any]:
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if tokenizer.pad_token_id is not None:
        specials["pad_token"] = "<PAD>"
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 2048,
        "padding_side": "right",
        "tokenizer_class": "LlamaTokenizer",
        **specials,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


def save_pretrained(
    model: VLA,
    path: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | str | None = None,
    extra_files: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` in the openvla-7b layout, atomically (temp folder + rename).

    `extra_files` maps file names to JSON-serialisable objects saved beside the weights (e.g. a training config);
    `write_extra(folder)` may add more files (e.g. a resumable training state) before the folder goes live.
    `state` overrides the weights to write (e.g. a state dict gathered from shards or a merged LoRA model).
    """
    from safetensors.torch import save_file

    from robovla.files import write_folder_atomic

    processor = model._require_processor()
    target_dtype = resolve_dtype(dtype) if dtype is not None else model.dtype
    state = state if state is not None else model.state_dict()
    state = {k: v.detach().to("cpu", target_dtype).contiguous() for k, v in state.items()}

    def fill(tmp: Path) -> None:
        config = model.config.to_hf_dict()
        config["torch_dtype"] = str(target_dtype).removeprefix("torch.")
        _write_json(tmp / "config.json", config)
        text = model.config.text_config
        _write_json(
            tmp / "generation_config.json",
            {"bos_token_id": text.bos_token_id, "eos_token_id": text.eos_token_id, "pad_token_id": text.pad_token_id},
        )
        shards = _shards(state, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SINGLE_FILE), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({key: name for key in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        processor.save(tmp)
        for name, data in _tokenizer_side_files(processor.tokenizer).items():
            _write_json(tmp / name, data)
        _write_json(tmp / "dataset_statistics.json", model.config.norm_stats or {})
        for name, data in (extra_files or {}).items():
            _write_json(tmp / name, data)
        if write_extra is not None:
            write_extra(tmp)

    return write_folder_atomic(path, fill)
