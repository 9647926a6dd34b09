"""`Policy`: a checkpoint ready to act, the one inference entry of the CLI, the server, evaluation and the demo.

A policy is a model plus what using it takes: which dataset's statistics turn tokens back into actions, how
decoding chooses (any token or only action tokens), and, for a grounding model, who says where the instruction's
objects are (a `robovla.grounding` source: its pointer, its own tokens, or values each observation carries).
Observations are dicts keyed like the recipe's cameras (`"image"`, ...), plus `"instruction"`, and for models
that read the robot state `"proprio"`; a missing key is an error that names it.

The path of one call: observations -> `VLAProcessor.model_inputs` -> `VLA.prefill` -> grounding source ->
`VLA.decode` -> `VLAProcessor.decode_prediction` -> `ActionPrediction`; with the parallel recipe
`VLA.parallel_actions` (one forward pass) -> `VLAProcessor.parallel_prediction`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robovla.config import Recipe
from robovla.errors import RobovlaError
from robovla.grounding import GROUNDING_KEY, GroundingSource, grounding_source

Observation = Mapping[str, Any]

_WARM_UP_SHORT = "pick it up"
_WARM_UP_LONG = ("pick up the small red block on the left side of the table, carry it slowly over the blue plate in "
                 "the middle and put it down gently next to the green cup without touching the yellow bowl")
_WARM_UP_MEDIUM = "pick up the red block and put it on the blue plate"
WARM_UP_BATCHES = (  # see Policy.warm_up
    (_WARM_UP_SHORT,), (_WARM_UP_LONG,), (_WARM_UP_SHORT,) * 2, (_WARM_UP_SHORT, _WARM_UP_LONG),
    (_WARM_UP_MEDIUM, _WARM_UP_SHORT, _WARM_UP_SHORT), (_WARM_UP_LONG,) * 3,
)


class Policy:
    """`predict(observation(s)) -> ActionPrediction`, with `compile()` and `warm_up()` for repeated calls."""

    def __init__(self, model: Any, unnorm_key: str | None = None, restrict_to_actions: bool = False,
                 grounding: str | GroundingSource | None = None, batch_invariant: bool = False) -> None:
        from robovla.processing import resolve_unnorm_key

        if unnorm_key is not None:
            resolve_unnorm_key(model.norm_stats, unnorm_key)  # an unknown dataset fails here, listing the known
        self.model = model
        self.unnorm_key = unnorm_key  # None: the checkpoint's only dataset, or one named with each call
        self.restrict_to_actions = restrict_to_actions
        # each observation in its own model call: a batch's answers are bit for bit those of single calls, which
        # reduced precision does not otherwise promise (a GEMM's summation order depends on its batch shape)
        self.batch_invariant = batch_invariant
        self.grounding = grounding_source(model, grounding)  # None: the recipe's (its pointer if fitted)
        self.compile_cache = None  # a CompileCache after compile(cache=...)

    @classmethod
    def from_pretrained(cls, path: str | Path, unnorm_key: str | None = None, restrict_to_actions: bool = False,
                        grounding: str | GroundingSource | None = None, batch_invariant: bool = False,
                        **load: Any) -> "Policy":
        """Load a checkpoint folder (`load`: dtype, device, quantization, as `robovla.load_pretrained`)."""
        from robovla.model.checkpoint import load_pretrained

        return cls(load_pretrained(path, **load), unnorm_key, restrict_to_actions, grounding, batch_invariant)

    # ------------------------------------------------------------------------------------------- what it needs
    @property
    def recipe(self) -> Recipe:
        return self.model.recipe

    @property
    def image_size(self) -> int:
        return self.model.processor.image_config.image_sizes[0]

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.recipe.cameras)

    @property
    def reads_proprio(self) -> bool:
        return self.recipe.proprio

    @property
    def action_chunk(self) -> int:
        """Actions per answer."""
        return self.recipe.action_chunk

    @property
    def observation_keys(self) -> list[str]:
        """The keys each observation must have."""
        return [*self.recipe.cameras, "instruction", *(["proprio"] if self.recipe.proprio else []),
                *([GROUNDING_KEY] if self.grounding.reads_observation else [])]

    def prompt_token_limit(self) -> int:
        """The most prompt ids (BOS, the prompt template around the instruction, state tokens, the word boundary)
        that fit the language model's context beside the image patches, state embeddings and the ids it says."""
        model, recipe, processor = self.model, self.recipe, self.model.processor
        prefix = model.vision_backbone.num_patches * len(recipe.cameras) + recipe.state_tokens
        if recipe.parallel:
            said = recipe.action_chunk * recipe.action_dim
        else:
            said = max((processor.generated_length(key) for key in model.norm_stats), default=0)
        return model.config.text_config.max_position_embeddings - prefix - said

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return self.model.action_dim(unnorm_key or self.unnorm_key)

    def proprio_dim(self, unnorm_key: str | None = None) -> int | None:
        """Length of the robot state the model reads for a dataset (None: it reads none)."""
        from robovla.processing import resolve_unnorm_key

        if not self.recipe.proprio:
            return None
        key = resolve_unnorm_key(self.model.norm_stats, unnorm_key or self.unnorm_key)
        return len(self.model.norm_stats[key].get("proprio", {}).get("q01", [])) or None

    # ----------------------------------------------------------------------------------------------- acting
    def predict(self, observations: Observation | Sequence[Observation], unnorm_key: str | None = None):
        """One observation dict, or a list of them (one batched model call) -> `ActionPrediction`.

        `unnorm_key` names this call's dataset when the policy has none of its own (a server's requests)."""
        import torch

        from robovla.model.decoding import Decoding

        batch = [observations] if isinstance(observations, Mapping) else list(observations)
        if not batch:
            raise RobovlaError("no observations given")
        for k, observation in enumerate(batch):
            self._check(k, observation)
        if self.batch_invariant and len(batch) > 1:
            from robovla.processing.prediction import ActionPrediction

            return ActionPrediction.concatenate([self.predict(o, unnorm_key) for o in batch])
        key = unnorm_key or self.unnorm_key
        processor = self.model.processor
        inputs = processor.model_inputs([{camera: o[camera] for camera in self.recipe.cameras} for o in batch],
                                        [o["instruction"] for o in batch],
                                        [o["proprio"] for o in batch] if self.recipe.proprio else None, key)
        if inputs.input_ids.shape[1] > (limit := self.prompt_token_limit()):
            raise RobovlaError(f"an instruction takes {inputs.input_ids.shape[1]} prompt tokens; this model's "
                               f"context leaves room for {limit}")
        if self.recipe.parallel:  # every action of the chunk from one forward pass
            said = self.model.parallel_actions(inputs, Decoding(self.recipe.selection, self.restrict_to_actions))
            return processor.parallel_prediction(said.token_ids, said.normalized, key)
        n_grounding = processor.grounding_dim(key)
        decoding = Decoding(self.recipe.selection, self.restrict_to_actions, greedy_steps=n_grounding)
        with torch.inference_mode():
            prefix = self.model.prefill(inputs, processor.generated_length(key),
                                        self.grounding.layer if n_grounding else None)
            forced = None
            if n_grounding:  # grounding tokens first: the source's estimate, the model's own where it has none
                positions = self.grounding.estimate(batch, prefix)
                if positions is not None:
                    forced = torch.as_tensor(processor.forced_grounding_ids(positions, len(batch), key))
            generated = self.model.decode(prefix, decoding, forced)
        return processor.decode_prediction(generated.cpu().numpy(), key)

    def _check(self, index: int, observation: Observation) -> None:
        if not isinstance(observation, Mapping):
            raise RobovlaError(f"observation {index} must be a dict, got {type(observation).__name__}")
        needed = self.observation_keys
        missing = [key for key in needed if observation.get(key) is None]
        if missing:
            raise RobovlaError(f"observation {index} has no {', '.join(map(repr, missing))} (this policy reads "
                               f"{', '.join(needed)})")
        if GROUNDING_KEY in observation and not self.grounding.reads_observation:
            raise RobovlaError(f"observation {index} gives {GROUNDING_KEY!r}, but this policy's grounding source is "
                               f"{self.grounding.name!r}: make the policy with grounding='given' to use the values")

    # ------------------------------------------------------------------------------------------- speed
    def compile(self, mode: str = "lean", cache: bool | str | Path = False) -> "Policy":
        """torch.compile the model's inference path (`mode`: see `VLA.compile_inference`).

        `cache` keeps the compiled code across restarts (`robovla.model.compile_cache`): True uses
        $ROBOVLA_COMPILE_CACHE or ~/.cache/robovla/compile, a path names the folder. What it holds for this model
        is loaded now, and `warm_up()` saves what it had to build, so the next start compiles nothing new.
        """
        from robovla.model.compile_cache import CompileCache, default_cache_folder, model_fingerprint

        if cache and mode != "lean":
            raise RobovlaError(f"the {mode!r} compile mode cannot be cached (its weights are baked into packed "
                               "constants): use mode='lean' or cache=False")
        self.model.compile_inference(mode=mode)
        self.compile_cache = None
        if cache:
            folder = default_cache_folder() if cache is True else Path(cache)
            fingerprint = model_fingerprint(self.model, self.model.config.to_hf_dict(), mode)
            self.compile_cache = CompileCache(folder, fingerprint, mode)
            self.compile_cache.load()
        return self

    def warm_up(self, on_call: Callable[[int, int, float], None] | None = None) -> "WarmUp":
        """Predict on blank observations so that compiling happens now, not at a robot's first requests.

        A compiled model compiles per new shape, and a server's worker waits meanwhile. Every dimension is
        dynamic from the first call, but batch 1 gets its own graphs, padded batches take a masked path and
        unpadded ones an unmasked one, and prompts of different lengths differ in KV-cache size: the calls
        cover each (two sizes of each, so a dimension that stayed static would show up as a recompile).
        The policy's dataset (None: the checkpoint's first; the shapes hardly depend on it) gives the state.
        `on_call(batch, longest prompt in tokens, seconds)` reports each call. With a compile cache
        (`compile(cache=...)`), what had to be built is saved at the end.
        """
        from robovla.model.compile_cache import compile_counters
        from robovla.processing import resolve_unnorm_key

        began, before = time.perf_counter(), compile_counters()
        key = resolve_unnorm_key(self.model.norm_stats, self.unnorm_key or sorted(self.model.norm_stats)[0])
        stats = self.model.norm_stats[key]
        size = self.image_size
        blank = {camera: np.zeros((size, size, 3), np.uint8) for camera in self.recipe.cameras}
        if self.recipe.proprio:
            blank["proprio"] = np.asarray(stats["proprio"]["q01"], dtype=np.float64)
        if self.grounding.reads_observation:
            blank[GROUNDING_KEY] = np.full(self.model.processor.grounding_dim(key), np.nan)
        for texts in WARM_UP_BATCHES:
            start = time.perf_counter()
            self.predict([{**blank, "instruction": text} for text in texts], unnorm_key=key)
            if on_call is not None:
                longest = max(len(self.model.processor.prompt_ids(text, blank.get("proprio"), key)) for text in texts)
                on_call(len(texts), longest, time.perf_counter() - start)
        after = compile_counters()
        built, from_cache = after["built"] - before["built"], after["from_cache"] - before["from_cache"]
        cache = self.compile_cache
        saved = cache is not None and (built > 0 or not cache.path.exists()) and cache.save()
        return WarmUp(time.perf_counter() - began, built, from_cache, saved)


@dataclass(frozen=True)
class WarmUp:
    """What `Policy.warm_up` took: seconds in all, graphs inductor built and graphs it took from a cache."""

    seconds: float
    graphs_built: int
    graphs_from_cache: int
    cache_saved: bool
