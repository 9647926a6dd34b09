"""Fit a grounding pointer (`robovla.model.pointer`) on a trained, frozen grounding policy.

The policy's weights stay as they are, so its hidden states for each training frame are computed once and
cached; the pointer then trains for thousands of steps on the cache, minutes on a CPU where one end-to-end step
of the policy costs more than a pointer epoch. Held-out episodes report how often each named thing is placed
within 5 cm of the truth (objects sit at least 10 cm apart, so a miss names another object).

Robot data teaches the pointer the words robot instructions use. A vision-language corpus (`vl_corpus`) adds
referring questions ("where is the orange cylinder?", asked in the corpus's own prompt) with the place of the one
thing each is about: they supervise the target role alone, so words that only the corpus holds can reach the
pointer, as web grounding data (RefCOCO) does in Prismatic's mixture.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robovla.data.instruction_noise import InstructionNoise
from robovla.errors import RobovlaError
from robovla.model.pointer import GroundingPointer, PointerConfig, prefix_parts
from robovla.train.pointer_config import PointerFitConfig

WITHIN = 0.05  # metres: an estimate further than this from the truth names another object


@dataclass
class FeatureCache:
    patches: torch.Tensor  # [N, P, H] float16
    text: torch.Tensor  # [N, T, H] float16, compacted
    text_mask: torch.Tensor  # [N, T] bool
    grounding: torch.Tensor  # [N, G] float32, metres
    episode: np.ndarray  # [N] global episode id (dataset, episode)
    frame: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.grounding)

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(patches, text, text_mask, grounding) of the given rows."""
        return self.patches[index], self.text[index], self.text_mask[index], self.grounding[index]

    def joined(self, other: "FeatureCache") -> "FeatureCache":
        """This cache's rows, then `other`'s."""
        return FeatureCache(torch.cat([self.patches, other.patches]), torch.cat([self.text, other.text]),
                            torch.cat([self.text_mask, other.text_mask]), torch.cat([self.grounding, other.grounding]),
                            np.concatenate([self.episode, other.episode]), np.concatenate([self.frame, other.frame]))


@dataclass
class FitReport:
    frames: int
    train_frames: int
    holdout_frames: int
    feature_seconds: float
    train_seconds: float
    holdout_within: list[float]  # per role: share of held-out estimates within 5 cm
    holdout_first_frame_within: list[float]
    holdout_median_error: list[float]  # metres
    history: list[dict] = field(default_factory=list)
    vl_questions: int = 0  # referring questions from the vision-language corpus in the cache
    vl_holdout_within: float | None = None  # share of held-out corpus questions whose thing is placed within 5 cm


def _frames(datasets: list, config: PointerFitConfig) -> list[tuple[int, int]]:
    """(dataset index, step index) of the frames to cache: every `frame_stride`-th frame of each episode."""
    chosen = []
    for d, data in enumerate(datasets):
        rows = np.flatnonzero(data.frame_index % config.frame_stride == 0)
        chosen += [(d, int(r)) for r in rows]
    if config.max_frames is not None and len(chosen) > config.max_frames:
        keep = np.random.default_rng(config.seed).choice(len(chosen), config.max_frames, replace=False)
        chosen = [chosen[k] for k in sorted(keep)]
    return chosen


def empty_cache(model, rows: int, max_text: int) -> FeatureCache:
    n_patches, width = model.vision_backbone.num_patches, model.config.text_config.hidden_size
    return FeatureCache(torch.empty(rows, n_patches, width, dtype=torch.float16),
                        torch.empty(rows, max_text, width, dtype=torch.float16),
                        torch.empty(rows, max_text, dtype=torch.bool), torch.empty(0),
                        np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64))


def prefix_features(model, pixel_values: torch.Tensor, prompts, layer: int,
                    max_text: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One prefix pass: (patch states, compacted prompt states, their mask) entering `layer`."""
    embedded = model.embed_patches(pixel_values)
    inputs, full_mask, position_ids = model.multimodal_inputs(embedded, prompts.input_ids, prompts.attention_mask)
    hidden = model.language_model.model(inputs_embeds=inputs, attention_mask=full_mask, position_ids=position_ids,
                                        output_hidden_states=True).hidden_states[layer]
    return prefix_parts(hidden, full_mask, embedded.shape[1], max_text)


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


@torch.no_grad()
def cache_features(model, datasets: list, frames: list[tuple[int, int]], unnorm_key: str, layer: int,
                   max_text: int, batch: int = 32, progress: bool = True,
                   jitter_seed: int | None = None, noise: Any | None = None,
                   noise_seed: int = 0) -> FeatureCache:
    """The frozen policy's hidden states entering `layer` for each frame: patch positions and prompt positions.
    With `jitter_seed`, each frame's colours are jittered first (row k draws from (jitter_seed, k)); with `noise`
    (an InstructionNoise), each frame's instruction gets its fillers (row k draws from (noise_seed, k, 1))."""
    processor = model._require_processor()
    jitter = None
    if jitter_seed is not None:
        from robovla.data.augment import NO_CROP, TrainAugment

        jitter = TrainAugment(NO_CROP)
    cache = empty_cache(model, len(frames), max_text)
    labels = []
    bar = _bar(len(frames), "pointer features", progress)
    for start in range(0, len(frames), batch):
        items = [datasets[d][i] for d, i in frames[start : start + batch]]
        instructions = [it["instruction"] for it in items]
        if noise is not None:
            instructions = [noise(text, np.random.default_rng([noise_seed, start + k, 1]))
                            for k, text in enumerate(instructions)]
        prompts = processor.encode_prompts(instructions,
                                           [it["proprio"] for it in items] if processor.uses_proprio else None,
                                           unnorm_key)
        images = [it["image"] for it in items]
        if jitter is not None:
            images = [jitter(image, np.random.default_rng([jitter_seed, start + k])) for k, image in enumerate(images)]
        patch_states, words, kept = prefix_features(model, processor.pixel_values(images), prompts, layer, max_text)
        rows = slice(start, start + len(items))
        cache.patches[rows] = patch_states.half()
        cache.text[rows] = words.half()
        cache.text_mask[rows] = kept
        labels.append(np.stack([it["grounding"] for it in items]))
        cache.episode[rows] = [d * 10**7 + it["episode_index"] for (d, _), it in zip(frames[rows], items)]
        cache.frame[rows] = [it["frame_index"] for it in items]
        if bar is not None:
            bar.update(len(items))
    if bar is not None:
        bar.close()
    cache.grounding = torch.as_tensor(np.concatenate(labels), dtype=torch.float32)
    return cache


@torch.no_grad()
def cache_vl_features(model, corpus, questions: np.ndarray, layer: int, max_text: int, roles: int,
                      batch: int = 32, progress: bool = True) -> FeatureCache:
    """Hidden states for corpus questions (`questions`: row indices of a `VLDataset`), each under its own prompt
    with its scene's picture; the label is the target role's place, the other roles NaN (not supervised). Each
    row's episode is minus one minus its scene, apart from every robot episode id."""
    processor = model._require_processor()
    cache = empty_cache(model, len(questions), max_text)
    labels = np.full((len(questions), roles * 2), np.nan, dtype=np.float32)
    labels[:, :2] = corpus.where[questions]
    bar = _bar(len(questions), "pointer features (corpus)", progress)
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        prompts = processor.pad_left([processor.vl_prompt_ids(corpus.questions[i]) for i in chunk])
        pictures = processor.vl_pixel_values([corpus.image(int(corpus.scene[i])) for i in chunk])
        patch_states, words, kept = prefix_features(model, pictures, prompts, layer, max_text)
        rows = slice(start, start + len(chunk))
        cache.patches[rows], cache.text[rows], cache.text_mask[rows] = patch_states.half(), words.half(), kept
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    cache.grounding = torch.as_tensor(labels)
    cache.episode = -1 - corpus.scene[questions]
    return cache


def fitted_pointer_state(folder: Path, settings: PointerConfig, pointer: GroundingPointer) -> dict[str, torch.Tensor]:
    """The pointer weights of the checkpoint in `folder`, checked against the pointer about to be fitted (its
    layer, roles and width, and every tensor's shape), before any feature is computed."""
    from robovla.config import POINTER_KEY, VLAConfig
    from robovla.model.checkpoint import iter_safetensors

    config_file = folder / "config.json"
    if not config_file.exists():
        raise RobovlaError(f"--init-pointer {folder}: no config.json there (not a checkpoint folder)")
    saved = VLAConfig.from_json_file(config_file).extra.get(POINTER_KEY)
    if saved is None:
        raise RobovlaError(f"--init-pointer {folder}: that checkpoint has no fitted grounding pointer")
    saved = PointerConfig.from_dict(saved).to_dict()  # a key left out there holds its default
    differing = {key: (saved[key], value) for key, value in settings.to_dict().items() if saved[key] != value}
    if differing:
        details = ", ".join(f"{key} {old!r} there, {new!r} here" for key, (old, new) in differing.items())
        raise RobovlaError(f"--init-pointer {folder}: its pointer has other settings ({details})")
    prefix = "grounding_pointer."
    state = {name[len(prefix):]: tensor.float() for name, tensor in iter_safetensors(folder) if name.startswith(prefix)}
    expected = pointer.state_dict()
    wrong = sorted(set(expected) ^ set(state)) + [name for name in set(expected) & set(state)
                                                  if expected[name].shape != state[name].shape]
    if wrong:
        raise RobovlaError(f"--init-pointer {folder}: its pointer weights do not fit this policy's pointer "
                           f"({', '.join(wrong[:5])})")
    return state


def corpus_questions(corpus, config: PointerFitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of the corpus's questions about one thing: at most `vl_questions` drawn at
    random, and the questions of `vl_holdout_scenes` scenes held out."""
    about_one = np.flatnonzero(np.isfinite(corpus.where).all(axis=1))
    if not len(about_one):
        raise RobovlaError(f"{config.vl_corpus} records no positions for its questions: write it again with this "
                           "version of robovla collect-vl")
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.permutation(about_one)[: config.vl_questions])
    scenes = np.unique(corpus.scene[chosen])
    count = min(config.vl_holdout_scenes, max(0, len(scenes) - 1))
    held = np.isin(corpus.scene[chosen], rng.permutation(scenes)[:count])
    return chosen[~held], chosen[held]


def evaluate_pointer(pointer: GroundingPointer, cache: FeatureCache, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Distances (m) between the pointer's estimates and the truth on `rows` of the cache, [len(rows), roles]."""
    pointer.eval()
    errors = [np.zeros((0, pointer.config.roles))]
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            patches, text, text_mask, truth = cache.rows(torch.as_tensor(rows[start : start + batch]))
            said = pointer.positions(pointer(patches, text, text_mask))
            errors.append((said - truth).view(len(truth), -1, 2).norm(dim=-1).numpy())
    pointer.train()
    return np.concatenate(errors)


def train_pointer(pointer: GroundingPointer, cache: FeatureCache, train_rows: np.ndarray, holdout_rows: np.ndarray,
                  config: PointerFitConfig, progress: bool = True) -> list[dict]:
    """AdamW, linear warm-up then cosine decay, on the cached features; returns the held-out history."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(pointer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, step - warmup) / max(1, config.steps - warmup)))))
    history = []
    every = max(1, config.steps // 5)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc="pointer", unit="step")
    for step in range(1, config.steps + 1):
        picked = torch.randint(0, len(train_rows), (config.batch_size,), generator=generator)
        patches, text, text_mask, truth = cache.rows(torch.as_tensor(train_rows)[picked])
        loss = pointer.loss(pointer(patches, text, text_mask), truth)
        if not torch.isfinite(loss):
            raise RobovlaError(f"pointer loss is {loss.item()} at step {step}; nothing was saved")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % every == 0 or step == config.steps:
            entry = {"step": step, "loss": round(loss.item(), 4)}
            if len(holdout_rows):
                errors = evaluate_pointer(pointer, cache, holdout_rows)
                entry["holdout_within"] = [round(float(v), 4) for v in (errors <= WITHIN).mean(0)]
            history.append(entry)
            if bar is not None:
                bar.write(json.dumps(entry))
    if bar is not None:
        bar.close()
    return history


def fit_pointer(config: PointerFitConfig, progress: bool = True):
    """Load the policy, cache its features on the datasets, train a pointer, save policy + pointer to
    `config.out` (atomically). Returns (model, FitReport)."""
    import robovla
    from robovla.data import open_dataset
    from robovla.sim import get_embodiment

    torch.manual_seed(config.seed)
    if Path(config.out).exists():
        raise RobovlaError(f"{config.out} already exists: choose a new --out")
    model = robovla.load_pretrained(config.checkpoint)
    processor = model._require_processor()
    if not processor.uses_grounding:
        raise RobovlaError(f"{config.checkpoint} has no grounding tokens (trained without --grounding): a pointer "
                           "fills those tokens, so it needs a grounding policy")
    embodiment = get_embodiment(config.embodiment)
    unnorm_key = embodiment.dataset_name
    n_grounding = processor.grounding_dim(unnorm_key)
    if n_grounding % 2:
        raise RobovlaError(f"grounding has {n_grounding} values; a pointer needs (x, y) pairs")
    datasets = [open_dataset(path) for path in config.datasets]
    for path, data in zip(config.datasets, datasets):
        if data.grounding is None:
            raise RobovlaError(f"{path} records no grounding labels (collect it with this version of robovla collect)")
        if data.grounding.shape[1] != n_grounding:
            raise RobovlaError(f"{path} has {data.grounding.shape[1]} grounding values, the model {n_grounding}")
    layers = model.config.text_config.num_hidden_layers
    layer = layers - 1 if config.layer is None else config.layer
    settings = PointerConfig(layer=layer, roles=n_grounding // 2, width=config.width)
    settings.check_layer(layers)  # before the feature pass, not when the result is loaded
    grid = math.isqrt(model.vision_backbone.num_patches)
    pointer = GroundingPointer(settings, model.config.text_config.hidden_size, grid * grid)
    if config.init_pointer is not None:
        pointer.load_state_dict(fitted_pointer_state(Path(config.init_pointer), settings, pointer))
    pointer.patch_xy.copy_(torch.as_tensor(embodiment.table_points(grid), dtype=torch.float32))  # this camera's

    noise = InstructionNoise(share=config.instruction_noise) if config.instruction_noise else None
    corpus = None
    if config.vl_corpus is not None:  # checked before the feature pass
        from robovla.data.vl_corpus import VLDataset

        corpus = VLDataset(config.vl_corpus)
        vl_train, vl_held = corpus_questions(corpus, config)

    start = time.perf_counter()
    frames = _frames(datasets, config)
    if not frames:
        raise RobovlaError("the datasets hold no frames")
    cache = cache_features(model, datasets, frames, unnorm_key, layer, settings.max_text, config.feature_batch,
                           progress, jitter_seed=config.seed if config.augment else None,
                           noise=noise, noise_seed=config.seed)
    episodes = np.unique(cache.episode)
    # at most a fifth of the episodes, and never all of them
    count = min(config.holdout_episodes, max(1, len(episodes) // 5), len(episodes) - 1)
    held = np.random.default_rng(config.seed).permutation(episodes)[:count]
    is_held = np.isin(cache.episode, held)
    train_rows, holdout_rows = np.flatnonzero(~is_held), np.flatnonzero(is_held)
    vl_holdout_rows = np.zeros(0, dtype=np.int64)
    if corpus is not None:
        offset = len(cache)
        cache = cache.joined(cache_vl_features(model, corpus, np.concatenate([vl_train, vl_held]), layer,
                                               settings.max_text, settings.roles, config.feature_batch, progress))
        train_rows = np.concatenate([train_rows, offset + np.arange(len(vl_train))])
        vl_holdout_rows = offset + len(vl_train) + np.arange(len(vl_held))
    feature_seconds = time.perf_counter() - start

    start = time.perf_counter()
    history = train_pointer(pointer, cache, train_rows, holdout_rows, config, progress)
    train_seconds = time.perf_counter() - start
    errors = evaluate_pointer(pointer, cache, holdout_rows)
    first = cache.frame[holdout_rows] == 0
    report = FitReport(
        frames=len(cache), train_frames=len(train_rows), holdout_frames=len(holdout_rows),
        feature_seconds=round(feature_seconds, 1), train_seconds=round(train_seconds, 1),
        holdout_within=[round(float(v), 4) for v in (errors <= WITHIN).mean(0)] if len(errors) else [],
        holdout_first_frame_within=[round(float(v), 4) for v in (errors[first] <= WITHIN).mean(0)] if first.any() else [],
        holdout_median_error=[round(float(v), 4) for v in np.median(errors, 0)] if len(errors) else [],
        history=history,
        vl_questions=int((cache.episode < 0).sum()),
        vl_holdout_within=round(float((evaluate_pointer(pointer, cache, vl_holdout_rows)[:, 0] <= WITHIN).mean()), 4)
        if len(vl_holdout_rows) else None,
    )
    model.set_grounding_pointer(pointer)
    extras = {"pointer_fit.json": {"config": asdict(config), "report": asdict(report)}}
    provenance = Path(config.checkpoint) / "training_config.json"
    if provenance.exists():  # how the policy itself was trained
        extras["training_config.json"] = json.loads(provenance.read_text())
    robovla.save_pretrained(model, config.out, dtype=config.dtype, extra_files=extras)
    return model, report
