"""`make bench`: inference speed and memory of robovla's predict path vs a Hugging Face `generate` baseline.

For each configuration (preset or checkpoint x dtype x quantization x batch size) it measures, in one run:
prefix latency (vision + projector + LLM prefill), per-token decode latency, end-to-end actions/s, and the
same end to end through the path the reference takes (every ViT block run, the LM head over every prefill
position, transformers' `generate`). It also measures the machine (GEMM rate, memory bandwidth) and derives
the physical floor: prefill FLOPs at the measured GEMM rate + weight bytes read per decoded token at the
measured bandwidth. Writes JSON and a markdown table.

    python benchmarks/run.py [--presets tiny small] [--dtypes float32 bfloat16] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import robovla
from robovla.model.checkpoint import resolve_dtype
from robovla.quantize import module_bytes, quantize_language_model

INSTRUCTIONS = ["put the red cube in the blue bowl", "push the green cube to the yellow square",
                "stack the blue cube on the red cube", "move the yellow cylinder next to the green cube"]


def timed(fn, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """Median wall time of `fn()` in seconds (after one warm-up call), the GPU's queued work included."""
    return timed_alternately([fn], repeats, device)[0]


def timed_alternately(fns, repeats: int, device: torch.device = torch.device("cpu")) -> list[float]:
    """Median wall time in seconds of each of `fns`, called in turn `repeats` times (after one warm-up round).

    Taking turns exposes every function to the same machine conditions: two paths timed one after the other
    drift apart on a shared machine (one CPU run timed the reference path at 357 and at 461 ms, minutes apart).
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns:
        fn()
    sync()
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, samples):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]


# ------------------------------------------------------------------------------------------------- the machine
def gemm_rate(dtype: torch.dtype, device: torch.device, largest: int, repeats: int, enough_s: float = 0.05) -> float:
    """GFLOP/s of square products in `dtype`: the size doubles from 256 until one product takes `enough_s` (or
    reaches `largest`). A fixed 2048 cost minutes on CPUs without bfloat16 units (0.7 GFLOP/s on one 2-core
    machine, and a CI test timed out there after 600 s); a product of 50 ms is long enough to time."""
    n = 256
    while True:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        if n >= largest or timed(lambda: a @ b, 1, device) >= enough_s:
            break
        n *= 2
    return 2 * n**3 / timed(lambda: a @ b, repeats, device) / 1e9


def machine_rates(device: torch.device, repeats: int = 5) -> dict:
    gpu = device.type == "cuda"
    n = 8192 if gpu else 2048
    out = {}
    if gpu:  # an idle GPU runs at low clocks: one H100 run measured 982 GB/s cold and 2,876 GB/s warm
        warm = torch.randn(n, n, dtype=torch.bfloat16, device=device)
        start = time.perf_counter()
        while time.perf_counter() - start < 2.0:
            warm @ warm
            torch.cuda.synchronize(device)
    for dtype in (torch.float32, torch.bfloat16):
        out[f"gemm_gflops_{str(dtype).removeprefix('torch.')}"] = round(gemm_rate(dtype, device, n, repeats), 1)
    big = torch.randn((2048 if gpu else 64) * 2**20 // 4, device=device)  # far larger than the caches
    seconds = timed(lambda: big.sum(), repeats, device)
    out["read_bandwidth_gbs"] = round(big.numel() * 4 / seconds / 1e9, 1)
    out["threads"] = torch.get_num_threads()
    out["platform"] = platform.platform()
    out["device"] = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    return out


# -------------------------------------------------------------------------------------------------- the paths
def inputs(model: robovla.VLA, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = model.processor.image_config.image_sizes[0]
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    texts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    return images, texts


def our_components(model: robovla.VLA, images, texts, key: str, repeats: int, reference) -> dict:
    """robovla's path: prefix latency (vision + projector + LLM prefill + first token), per-token decode latency
    (the rest of the 7 tokens, on the static KV cache) and end to end (`predict`, preprocessing included), the
    last timed in turns with `reference` (a `reference_path` callable)."""
    processor = model.processor
    inputs = processor.model_inputs(images, texts, unnorm_key=key)
    action_dim = processor.normalizer(key).action_dim

    device = model.device
    with torch.inference_mode():
        # in turns too: the decode figure is their difference, which drift between two series would swamp
        prefix_s, tokens_s = timed_alternately(
            [lambda: model.generate(inputs, 1), lambda: model.generate(inputs, action_dim)],
            repeats, device)
        end_to_end, reference_s = timed_alternately([lambda: model.predict(images, texts, key), reference],
                                                    repeats, device)
    decode_s = max(tokens_s - prefix_s, 0.0) / (action_dim - 1)
    return {"prefix_ms": prefix_s * 1e3, "decode_token_ms": decode_s * 1e3, "end_to_end_ms": end_to_end * 1e3,
            "reference_end_to_end_ms": reference_s * 1e3}


def reference_path(model: robovla.VLA, images, texts, key: str):
    """The reference's way: every ViT block, LM head over all prefill positions, transformers `generate`.
    Returns a callable giving the action token ids [B, D] (examples one by one, as the reference must)."""
    processor = model.processor
    lm = model.language_model
    action_dim = processor.normalizer(key).action_dim

    def run_one(image, text):
        pixel_values = processor.pixel_values([image]).to(model.device, model.dtype)
        features = []
        for tower, x in zip(model.vision_backbone.towers, torch.split(pixel_values, 3, dim=1)):
            (feature,) = tower.forward_intermediates(x, indices=[len(tower.blocks) - 2], output_fmt="NLC",
                                                     intermediates_only=True, stop_early=False)
            features.append(feature)
        patches = model.projector(torch.cat(features, dim=2))
        ids = torch.tensor([processor.prompt_ids(text)], device=model.device)
        embeds = lm.get_input_embeddings()(ids)
        inputs_embeds = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
        return lm.generate(inputs_embeds=inputs_embeds, attention_mask=torch.ones(inputs_embeds.shape[:2],
                                                                                  dtype=torch.long,
                                                                                  device=model.device),
                           max_new_tokens=action_dim, min_new_tokens=action_dim, do_sample=False, num_beams=1,
                           logits_to_keep=0, pad_token_id=processor.tokenizer.pad_token_id)

    @torch.inference_mode()
    def run_batch():  # the reference's generate asserts batch size 1: examples go one by one
        tokens = [run_one(image, text) for image, text in zip(images, texts)]
        return np.stack([t[0, -action_dim:].cpu().numpy() for t in tokens])

    return run_batch


# ---------------------------------------------------------------------------------------------------- floor
def floor_ms(model: robovla.VLA, batch: int, prompt_tokens: int, rates: dict, dtype: torch.dtype,
             action_dim: int) -> dict:
    """Prefill matmul FLOPs at the measured GEMM rate + decode weight bytes at the measured bandwidth."""
    vision = model.vision_backbone
    flops = 0.0
    for tower in vision.towers:
        used = sum(p.numel() for block in tower.blocks[:-1] for p in block.parameters() if p.dim() == 2)
        flops += 2 * used * (vision.num_patches + tower.num_prefix_tokens)
    flops += 2 * sum(p.numel() for p in model.projector.parameters() if p.dim() == 2) * vision.num_patches
    layers = sum(p.numel() for p in model.language_model.model.layers.parameters() if p.dim() == 2)
    sequence = 1 + vision.num_patches + prompt_tokens
    flops += 2 * layers * sequence + 2 * model.language_model.lm_head.weight.numel()  # head: last position only
    flops *= batch
    rate = rates["gemm_gflops_bfloat16" if dtype == torch.bfloat16 else "gemm_gflops_float32"] * 1e9
    decode_bytes = module_bytes(model.language_model.model.layers) + module_bytes(model.language_model.lm_head)
    decode_s = (action_dim - 1) * decode_bytes / (rates["read_bandwidth_gbs"] * 1e9)
    return {"prefill_floor_ms": flops / rate * 1e3, "decode_floor_ms": decode_s * 1e3,
            "floor_ms": (flops / rate + decode_s) * 1e3}


# ------------------------------------------------------------------------------------------------------ main
def build(preset: str, dtype: torch.dtype, quantization: str | None, device: torch.device) -> robovla.VLA:
    stats = {"bench": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
    model = robovla.build_model(preset, dtype=dtype, norm_stats=stats, device=device).eval()
    if quantization:
        quantize_language_model(model, quantization)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--quantization", nargs="+", default=["none"], help="none, int8, int4")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"],
                        help="eager, compiled (VLA.compile_inference(mode='frozen'): frozen weights, the published "
                             "rows) and/or lean (the default compile mode: shared weights, cacheable)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: the machine measured and run on")
    parser.add_argument("--json", default="benchmarks/results/inference.json")
    parser.add_argument("--markdown", default="docs/benchmarks.md")
    parser.add_argument("--redraw", action="store_true", help="only rewrite the markdown from the JSON file")
    args = parser.parse_args()
    if args.redraw:
        saved = json.loads(Path(args.json).read_text())
        Path(args.markdown).write_text(markdown(saved["machine"], saved["results"], args.json))
        return
    device = torch.device(args.device)
    rates = machine_rates(device)
    print(json.dumps(rates), flush=True)
    rows = []
    for preset in args.presets:
        for dtype_name in args.dtypes:
            dtype = resolve_dtype(dtype_name)
            for quantization in args.quantization:
                q = None if quantization == "none" else quantization
                model = build(preset, dtype, q, device)
                for batch in args.batches:
                    images, texts = inputs(model, batch)
                    reference = reference_path(model, images, texts, "bench")
                    reference_tokens = reference()
                    prompt_tokens = max(len(model.processor.prompt_ids(t)) for t in texts) - 1
                    floor = floor_ms(model, batch, prompt_tokens, rates, dtype, 7)
                    for mode in args.modes:
                        model.compile_inference(mode != "eager", mode="lean" if mode == "lean" else "frozen")
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(device)
                        ours = our_components(model, images, texts, "bench", args.repeats, reference)
                        same = float(np.mean(model.predict(images, texts, "bench").token_ids[:, 0] == reference_tokens))
                        row = {
                            "preset": preset, "dtype": dtype_name, "quantization": quantization, "batch": batch,
                            "mode": mode, "parameters": robovla.parameter_counts(model)["total"],
                            "llm_weight_mb": round(module_bytes(model.language_model) / 2**20, 1),
                            **{k: round(v, 2) for k, v in ours.items()},
                            "actions_per_s": round(batch / ours["end_to_end_ms"] * 1e3, 2),
                            "same_tokens_as_reference": round(same, 4),
                            "speedup_vs_reference": round(ours["reference_end_to_end_ms"] / ours["end_to_end_ms"], 2),
                            **{k: round(v, 2) for k, v in floor.items()},
                            "x_floor": round(ours["end_to_end_ms"] / floor["floor_ms"], 2),
                        }
                        if device.type == "cuda":
                            row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                    model.compile_inference(False)
                del model
                torch._dynamo.reset()  # frees its compiled graphs (each holds packed weights) before the next model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": rates, "results": rows}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rates, rows, args.json))


def markdown(rates: dict, rows: list[dict], json_path: str = "benchmarks/results/inference.json") -> str:
    lines = [
        "# Inference benchmarks",
        "",
        f"Made by `make bench` (`benchmarks/run.py`); raw numbers in `{json_path}`.",
        f"Machine: {rates.get('device', 'CPU')}, {rates['threads']} threads, GEMM {rates['gemm_gflops_float32']} GFLOP/s fp32 / "
        f"{rates['gemm_gflops_bfloat16']} GFLOP/s bf16, read bandwidth {rates['read_bandwidth_gbs']} GB/s.",
        "",
        "`reference` runs the path the reference takes on the same weights: every ViT block, the LM head over",
        "every prefill position, transformers `generate`, one example at a time (its `generate` refuses batches).",
        "Its end to end and robovla's are timed in turns, so both see the same machine conditions.",
        "`floor` = prefill matmul FLOPs at the measured GEMM rate + decode weight bytes at the measured bandwidth.",
        "`mode`: robovla's static-cache path `eager`, `compiled` (`compile_inference(mode='frozen')`: torch.compile with",
        "frozen weights and merged q/k/v and gate/up GEMMs; compile time excluded; each model's compiled graphs are",
        "freed before the next model), or `lean` (the default mode: weights shared, graphs cacheable).",
        "`same tokens`: share of action tokens equal to the reference path's.",
        "`prefix ms`: a 1-token call (vision, projector, LLM prefill, first token); `decode ms/token`: a 7-token",
        "call minus the 1-token call, over 6, the two timed in turns (noisy where decoding is a small share).",
        "`ceiling` = reference ms / floor ms: the speed-up a path running exactly at the floor would reach; where it",
        "is below 2x, no implementation on this machine can be 2x faster than the reference.",
        "",
        "`peak MB`: the most GPU memory allocated while measuring (GPU runs only).",
        "",
        "| preset | dtype | quant | batch | mode | prefix ms | decode ms/token | end-to-end ms | actions/s |"
        " reference ms | speed-up | same tokens | floor ms | x floor | ceiling | peak MB |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = f"{r['peak_memory_mb']:.0f}" if "peak_memory_mb" in r else "-"
        lines.append(
            f"| {r['preset']} | {r['dtype']} | {r['quantization']} | {r['batch']} | {r['mode']} | "
            f"{r['prefix_ms']:.1f} | {r['decode_token_ms']:.1f} | {r['end_to_end_ms']:.1f} | {r['actions_per_s']:.1f} | "
            f"{r['reference_end_to_end_ms']:.1f} | {r['speedup_vs_reference']:.2f}x | "
            f"{r['same_tokens_as_reference']:.0%} | {r['floor_ms']:.1f} | {r['x_floor']:.2f} | "
            f"{r['reference_end_to_end_ms'] / r['floor_ms']:.2f}x | {peak} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
