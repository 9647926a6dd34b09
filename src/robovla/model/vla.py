"""The VLA: vision backbone -> projector -> Llama, trained and served through one processing chain.

Sequence layout (per example): [BOS] + patch embeddings + prompt tokens (+ action tokens + EOS in training).
With a batch of prompts of different lengths the padding sits between the patches and the text, where an
attention mask hides it and position ids skip it, so every example sees exactly its unpadded positions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robovla.config import POINTER_KEY, Recipe, VLAConfig
from robovla.errors import RobovlaError
from robovla.model.action_heads import ActionQueries, L1ActionHead, StateProjector, parallel_attention_mask
from robovla.model.decoding import (COMPILE_MODES, DecodeState, Decoding, StaticCacheDecoder, compile_function,
                                   compile_settings, pick_tokens)
from robovla.model.pointer import GroundingPointer, PointerConfig
from robovla.model.projector import Projector
from robovla.model.vision import VisionBackbone
from robovla.processing import IGNORE_INDEX, ActionPrediction, ModelInputs, VLAProcessor


@dataclass
class Prefix:
    """A batch after the prefix pass (`VLA.prefill`): the decoder's cache and, if captured, one layer's hidden
    states [B, L, H] laid out like `multimodal_inputs` ([BOS] + patches + prompt)."""

    state: DecodeState
    mask: torch.Tensor | None  # [B, L] the prefix's attention mask (None: no padding)
    n_patches: int

    @property
    def hidden(self) -> torch.Tensor | None:
        return self.state.captured


@dataclass
class VLAOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None  # [B, L, V], or [N, V] over the supervised positions when full_logits=False
    labels: torch.Tensor | None = None  # [N] targets matching `logits` when full_logits=False
    actions: torch.Tensor | None = None  # parallel recipe: the normalised actions said [B, K, D]


@dataclass
class ParallelActions:
    """A parallel pass's answer: the chosen bin ids (discrete head) or the normalised values (L1 head)."""

    token_ids: torch.Tensor | None  # [B, K, D]
    normalized: torch.Tensor | None  # [B, K, D] in [-1, 1]


def _build_language_model(config: VLAConfig) -> nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(config.text_config.to_llama_config())


def _build_pointer(config: VLAConfig, num_patches: int) -> GroundingPointer | None:
    settings = config.extra.get(POINTER_KEY)
    if settings is None:
        return None
    pointer = PointerConfig.from_dict(settings)
    pointer.check_layer(config.text_config.num_hidden_layers)
    return GroundingPointer(pointer, config.text_config.hidden_size, num_patches)


class VLA(nn.Module):
    """OpenVLA-compatible model. State dict keys are exactly the reference checkpoint's (plus `grounding_pointer.*`
    for a model fit with a grounding pointer)."""

    def __init__(self, config: VLAConfig, processor: VLAProcessor | None = None) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config)
        self.projector = Projector(
            self.vision_backbone.embed_dim, config.text_config.hidden_size, fused=config.use_fused_vision_backbone
        )
        self.language_model = _build_language_model(config)
        self.grounding_pointer = _build_pointer(config, self.vision_backbone.num_patches)
        self.action_queries: ActionQueries | None = None
        self.action_head: L1ActionHead | None = None
        self.state_projector: StateProjector | None = None
        self._build_recipe_modules()
        self.processor = processor
        self._compiled_inference: str | None = None  # a compile mode, None: eager
        self._compiled_vision = None
        self._decoder: StaticCacheDecoder | None = None  # built on first use, for the current language model
        self._compiled_parallel = None

    def _build_recipe_modules(self) -> None:
        """The recipe's extra modules (model/action_heads.py), made where missing or of another shape and dropped
        where the recipe has none, so a model given another recipe (fine-tuning into it) gets fresh ones."""
        recipe, hidden = self.config.recipe, self.config.text_config.hidden_size
        device, dtype = self.projector.fc1.weight.device, self.projector.fc1.weight.dtype

        def kept(module: nn.Module | None, shape: tuple) -> bool:
            return module is not None and getattr(module, "spec", None) == shape

        wanted = {
            "action_queries": (ActionQueries, (recipe.action_chunk, recipe.action_dim, hidden)) if recipe.parallel else None,
            "action_head": (L1ActionHead, (recipe.action_dim, hidden)) if recipe.action_head == "l1" else None,
            "state_projector": (StateProjector, (recipe.state_dim, hidden, recipe.state_tokens))
            if recipe.state_tokens else None,
        }
        for name, spec in wanted.items():
            if spec is None:
                setattr(self, name, None)
            elif not kept(getattr(self, name), spec[1]):
                setattr(self, name, spec[0](*spec[1]).to(device=device, dtype=dtype))

    # ---------------------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats or {}

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return self._require_processor().normalizer(unnorm_key).action_dim

    def _require_processor(self) -> VLAProcessor:
        if self.processor is None:
            raise RobovlaError("this model has no processor (tokenizer + image settings); load it from a checkpoint")
        return self.processor

    def reset_rotary_buffers(self) -> None:
        """Recompute Llama's non-persistent RoPE tables (needed after building on the meta device)."""
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        lm = self.language_model.model
        with torch.device(self.device):
            lm.rotary_emb = LlamaRotaryEmbedding(config=self.language_model.config)

    # ------------------------------------------------------------------------------------------ embeddings
    def embed_prefix(self, pixel_values: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """What enters between BOS and the prompt: each camera's patches in the recipe's order, then the state
        projector's tokens (a recipe with `state_tokens`): [B, cameras * N (+ S), hidden]."""
        patches = self.embed_patches(pixel_values)
        if self.state_projector is None:
            return patches
        if state is None:
            raise RobovlaError("this model's state projector needs the normalised robot state (ModelInputs.state)")
        return torch.cat([patches, self.state_projector(state.to(self.device)).to(patches.dtype)], dim=1)

    def embed_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, cameras * 3k, H, W] -> projected patch embeddings [B, cameras * N, hidden]: every camera through the
        same backbone and projector in one batched pass, their patches concatenated in camera order."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        cameras = len(self.config.recipe.cameras)
        if cameras > 1:
            batch = pixel_values.shape[0]
            per_camera = pixel_values.view(batch * cameras, -1, *pixel_values.shape[2:])
            return self.embed_patches_one(per_camera).reshape(batch, -1, self.config.text_config.hidden_size)
        return self.embed_patches_one(pixel_values)

    def embed_patches_one(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """One image per row: [B, 3k, H, W] -> [B, N, hidden]."""
        if self._compiled_inference and not torch.is_grad_enabled():
            if self._compiled_vision is None:
                self._compiled_vision = compile_function(self._project_patches, self._compiled_inference)
            with compile_settings(self._compiled_inference):
                return self._compiled_vision(pixel_values)
        return self._project_patches(pixel_values)

    def _project_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values))

    def multimodal_inputs(
        self, patches: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Insert patches after the first token (BOS) of each row.

        input_ids [B, T] are left-padded (mask 0 on padding) and each row's first real token is BOS. Returns
        (inputs_embeds [B, 1+N+T-1, H], attention_mask or None when there is no padding, position_ids).
        """
        batch, n_patches = patches.shape[:2]
        embeds = self.language_model.get_input_embeddings()(input_ids.to(self.device))
        if attention_mask is None or bool(attention_mask.all()):
            bos, text = embeds[:, :1], embeds[:, 1:]
            mask = None
            seq_len = 1 + n_patches + text.shape[1]
            position_ids = torch.arange(seq_len, device=self.device).expand(batch, -1)
        else:
            attention_mask = attention_mask.to(self.device)
            first = attention_mask.float().argmax(dim=1)  # index of each row's BOS
            rows = torch.arange(batch, device=self.device)
            bos = embeds[rows, first].unsqueeze(1)
            # The whole padded row follows the patches; BOS's old slot joins the (masked) padding.
            text = embeds
            text_mask = attention_mask.clone()
            text_mask[rows, first] = 0
            ones = torch.ones((batch, 1 + n_patches), dtype=attention_mask.dtype, device=self.device)
            mask = torch.cat([ones, text_mask], dim=1)
            position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        inputs = torch.cat([bos, patches.to(embeds.dtype), text], dim=1)
        return inputs, mask, position_ids

    # -------------------------------------------------------------------------------------------- training
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        full_logits: bool = True,
        state: torch.Tensor | None = None,
        action_targets: torch.Tensor | None = None,
    ) -> VLAOutput:
        """Teacher-forced pass. `labels` align with `input_ids` (IGNORE_INDEX where unsupervised).

        With full_logits=False the LM head runs only on the positions that predict a label (a 32k-row head over
        every image position is wasted work in training). `state` is the normalised robot state of a recipe with
        a state projector. The parallel recipe reads the prompt only and says every action at once: its `labels`
        are the action bins [B, K * D] (discrete head) and `action_targets` the normalised actions [B, K, D]
        (L1 head).
        """
        prefix = self.embed_prefix(pixel_values, state)
        inputs, mask, position_ids = self.multimodal_inputs(prefix, input_ids, attention_mask)
        if self.recipe.parallel:
            return self._parallel_loss(self._action_states(inputs, mask, position_ids), labels, action_targets)
        hidden = self.language_model.model(
            inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        lm_head = self.language_model.lm_head
        if labels is None:
            return VLAOutput(loss=None, logits=lm_head(hidden))
        full_labels = self._multimodal_labels(labels.to(self.device), attention_mask, prefix.shape[1])
        # position t predicts token t+1
        shifted = full_labels[:, 1:]
        if full_logits:
            logits = lm_head(hidden)
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX
            )
            return VLAOutput(loss=loss, logits=logits)
        selected = shifted != IGNORE_INDEX
        logits = lm_head(hidden[:, :-1][selected])
        targets = shifted[selected]
        return VLAOutput(loss=F.cross_entropy(logits.float(), targets), logits=logits, labels=targets)

    # ------------------------------------------------------------------------------------ parallel decoding
    def _action_states(self, inputs: torch.Tensor, mask: torch.Tensor | None,
                       position_ids: torch.Tensor) -> torch.Tensor:
        """One pass over [prefix + K x D empty action positions] (`parallel_attention_mask`): the action positions'
        final hidden states [B, K, D, hidden]."""
        queries = self.action_queries
        assert queries is not None
        batch, length = inputs.shape[:2]
        slots = queries(batch, inputs.dtype)
        keep = mask if mask is not None else torch.ones(batch, length, dtype=torch.long, device=inputs.device)
        positions = torch.cat([position_ids, position_ids[:, -1:] + 1 + torch.arange(queries.slots, device=inputs.device)],
                              dim=1)
        run = self.language_model.model
        compiled = self._compiled_inference if not torch.is_grad_enabled() else None
        if compiled:
            if self._compiled_parallel is None:
                self._compiled_parallel = compile_function(run, compiled)
            run = self._compiled_parallel
        with compile_settings(compiled):
            hidden = run(inputs_embeds=torch.cat([inputs, slots], dim=1),
                         attention_mask=parallel_attention_mask(keep, queries.slots), position_ids=positions,
                         use_cache=False).last_hidden_state
        return hidden[:, length:].reshape(batch, queries.chunk, queries.action_dim, -1)

    def _bin_logits(self, action_states: torch.Tensor) -> torch.Tensor:
        """The discrete head: the language model's head over the 256 action bins only, [B, K, D, bins] (float32)."""
        first, end = self.config.action_token_range
        weight = self.language_model.lm_head.weight[first:end]
        return (action_states @ weight.T.to(action_states.dtype)).float()

    def _parallel_loss(self, action_states: torch.Tensor, labels: torch.Tensor | None,
                       action_targets: torch.Tensor | None) -> VLAOutput:
        first = self.config.action_token_range[0]
        if self.action_head is not None:  # continuous: L1 on the normalised actions
            said = self.action_head(action_states).float()
            loss = None if action_targets is None else (said - action_targets.to(said.device).float()).abs().mean()
            return VLAOutput(loss=loss, logits=None, actions=said)
        logits = self._bin_logits(action_states)
        flat = logits.flatten(0, 2)
        if labels is None:
            return VLAOutput(loss=None, logits=flat)
        targets = labels.to(self.device).flatten() - first
        # labels in the full vocabulary's ids, as the autoregressive recipe's: the loop's metrics read them alike
        return VLAOutput(loss=F.cross_entropy(flat, targets), logits=flat, labels=targets + first)

    def parallel_actions(self, inputs: ModelInputs, decoding: Decoding | None = None) -> ParallelActions:
        """The parallel recipe's inference: every action of the chunk from one forward pass."""
        if not self.recipe.parallel:
            raise RobovlaError("parallel_actions: this model decodes autoregressively (recipe decoding "
                               f"{self.recipe.decoding!r}); use generate")
        with torch.inference_mode():
            prefix = self.embed_prefix(inputs.pixel_values, inputs.state)
            embeds, mask, position_ids = self.multimodal_inputs(prefix, inputs.input_ids, inputs.attention_mask)
            action_states = self._action_states(embeds, mask, position_ids)
            if self.action_head is not None:
                return ParallelActions(None, self.action_head(action_states).float().clamp(-1.0, 1.0))
            logits = self._bin_logits(action_states)
            first = self.config.action_token_range[0]
            selection = (decoding or Decoding(selection=self.recipe.selection)).selection
            picked = pick_tokens(logits.flatten(0, 2), (0, logits.shape[-1]), selection) + first
            return ParallelActions(picked.view(logits.shape[:3]), None)

    def _multimodal_labels(
        self, labels: torch.Tensor, attention_mask: torch.Tensor | None, n_patches: int
    ) -> torch.Tensor:
        """Labels laid out like `multimodal_inputs`: IGNORE for BOS and patches, text labels after them."""
        batch = labels.shape[0]
        labels = labels.clone()
        if attention_mask is not None:
            labels[attention_mask.to(labels.device) == 0] = IGNORE_INDEX
            first = attention_mask.float().argmax(dim=1).to(labels.device)
            labels[torch.arange(batch, device=labels.device), first] = IGNORE_INDEX
            text = labels
        else:
            text = labels[:, 1:]
        prefix = torch.full((batch, 1 + n_patches), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        return torch.cat([prefix, text], dim=1)

    # ------------------------------------------------------------------------------------------- inference
    def prefill(self, inputs: ModelInputs, num_tokens: int, capture_layer: int | None = None) -> Prefix:
        """The prefix pass ([BOS] + patches + prompt) with a KV cache sized for `num_tokens` generated ids.

        With `capture_layer` the prefix keeps the hidden states entering that language-model layer (a grounding
        pointer reads them, `robovla.grounding`)."""
        with torch.inference_mode():
            prefix = self.embed_prefix(inputs.pixel_values, inputs.state)
            embeds, mask, position_ids = self.multimodal_inputs(prefix, inputs.input_ids, inputs.attention_mask)
            state = self._static_decoder().prefill(embeds, mask, position_ids, num_tokens, capture_layer)
        return Prefix(state, mask, prefix.shape[1])

    def decode(self, prefix: Prefix, decoding: Decoding | None = None, forced: torch.Tensor | None = None,
               step_logits: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Ids [B, num_tokens] after `prefill`, one token per step on the static KV cache.

        `forced` [B, F] holds ids to emit at the first F steps instead of choosing (-1: choose); the ids after
        them are conditioned on them. If `step_logits` is a list, each step's logits [B, V] (float32) are
        appended to it."""
        decoding = decoding or Decoding(selection=self.recipe.selection)
        restrict = decoding.restrict_to_actions or decoding.selection != "greedy"
        token_range = self.config.action_token_range if restrict else None
        return self._static_decoder().decode(prefix.state, token_range, decoding.selection, decoding.greedy_steps,
                                             forced, step_logits)

    def generate(self, inputs: ModelInputs, num_tokens: int, decoding: Decoding | None = None,
                 forced: torch.Tensor | None = None, step_logits: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`prefill` then `decode`: ids [B, num_tokens] (`decoding` None: the recipe's selection)."""
        return self.decode(self.prefill(inputs, num_tokens), decoding, forced, step_logits)

    def _static_decoder(self) -> StaticCacheDecoder:
        if self._decoder is None or self._decoder.lm is not self.language_model:
            self._decoder = StaticCacheDecoder(self.language_model, compile=self._compiled_inference)
        return self._decoder

    @property
    def recipe(self) -> Recipe:
        return self.config.recipe

    def set_recipe(self, recipe: Recipe) -> None:
        """Change what the model reads and says (training with other options, `export --selection`): the config
        and the processor hold the same recipe, and config.json saves it. Modules the new recipe needs and the
        model lacks (a parallel head, a state projector) are made fresh; those it no longer needs are dropped."""
        self.config.recipe = recipe
        if self.processor is not None:
            self.processor.recipe = recipe
        self._build_recipe_modules()

    def set_grounding_pointer(self, pointer: GroundingPointer | None) -> None:
        """Attach a fitted grounding pointer, or drop it (None: the language model says its own grounding tokens);
        the recipe's grounding source and `config.json`'s `robovla_grounding_pointer` follow, so a saved
        checkpoint matches its weights."""
        self.grounding_pointer = pointer
        if pointer is None:
            self.config.extra.pop(POINTER_KEY, None)
        else:
            self.config.extra[POINTER_KEY] = pointer.config.to_dict()
        self.set_recipe(replace(self.config.recipe, grounding_source="tokens" if pointer is None else "pointer"))

    def compile_inference(self, enabled: bool = True, mode: str = "lean") -> "VLA":
        """Run vision, prefill and each decode step through torch.compile; `enabled=False` returns to eager.

        In the lean mode every dimension is dynamic from the first call, so one graph per function covers batch
        sizes of 2 and more, another batch 1, and prompt lengths share them; `Policy.warm_up()` compiles them up
        front.
        `mode` (see `compile_settings`): "lean" (default) keeps the weights as the graphs' inputs, so every graph
        shares the model's one copy and compiled code can be cached across restarts (`Policy.compile(cache=...)`);
        "frozen" bakes them into pre-packed constants, one copy per graph (the small preset in bf16: 1.3 GB eager,
        2.5 GB after its first prediction) and compiles from nothing at every start.
        Greedy tokens stay those of the eager path. For inference only.
        """
        if mode not in COMPILE_MODES:
            raise RobovlaError(f"unknown compile mode {mode!r}; valid: {', '.join(COMPILE_MODES)}")
        self._compiled_inference = mode if enabled else None
        self._decoder = None
        self._compiled_vision = None
        self._compiled_parallel = None
        # compiled, the ViTs' plain attention (matmul, softmax, matmul) fuses and edges out the CPU flash kernel
        # (small preset, 257 tokens: vision 43 -> 40 ms); eager keeps the fused kernel
        for tower in self.vision_backbone.towers:
            for module in tower.modules():
                if hasattr(module, "fused_attn"):
                    module.fused_attn = not enabled
        return self

    def predict(self, images: Any, instructions: str | Sequence[str], unnorm_key: str | None = None,
                proprio: Sequence[Any] | None = None, decoding: Decoding | None = None) -> ActionPrediction:
        """Image(s) + instruction(s) -> `ActionPrediction`, everything said by the language model itself
        (its own grounding tokens; `robovla.Policy` adds grounding sources, observation dicts and warm-up).

        `decoding` None: greedy over the whole vocabulary, or the checkpoint's `recipe.selection`. Models that
        read the robot state (`recipe.proprio`) need `proprio`, one vector per image."""
        processor = self._require_processor()
        image_list, instruction_list = _as_batch(images, instructions)
        inputs = processor.model_inputs(image_list, instruction_list, proprio, unnorm_key)
        decoding = decoding or Decoding(selection=self.recipe.selection)
        if self.recipe.parallel:
            said = self.parallel_actions(inputs, decoding)
            return processor.parallel_prediction(said.token_ids, said.normalized, unnorm_key)
        decoding = replace(decoding, greedy_steps=processor.grounding_dim(unnorm_key))
        generated = self.generate(inputs, processor.generated_length(unnorm_key), decoding)
        return processor.decode_prediction(generated.cpu().numpy(), unnorm_key)

    def predict_action(self, images: Any, instructions: str | Sequence[str], unnorm_key: str | None = None,
                       proprio: Any = None, return_token_ids: bool = False, restrict_to_actions: bool = False):
        """The reference OpenVLA call: image(s) + instruction(s) -> unnormalised action(s).

        One image (HxWx3 uint8 array or PIL image) and one string give a [action_dim] array; lists give
        [B, action_dim]. With return_token_ids=True the generated ids come back too: (actions, token_ids).
        Models trained with the robot state also need `proprio`: one vector, or one per image."""
        single = isinstance(instructions, str)
        if single and proprio is not None:
            proprio = [proprio]
        decoding = Decoding(selection=self.recipe.selection, restrict_to_actions=restrict_to_actions)
        prediction = self.predict(images, instructions, unnorm_key, proprio, decoding)
        actions, token_ids = prediction.first, prediction.token_ids[:, 0]
        if single:
            actions, token_ids = actions[0], token_ids[0]
        return (actions, token_ids) if return_token_ids else actions


def _as_batch(images: Any, instructions: str | Sequence[str]) -> tuple[list[Any], list[str]]:
    """Normalise (image, instruction) or (list, list) inputs; one instruction may serve several images."""
    if isinstance(instructions, str):
        instruction_list = [instructions]
        image_list = [images]
    else:
        instruction_list = list(instructions)
        image_list = list(images) if isinstance(images, (list, tuple)) else [images]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            image_list = list(images)
    if not instruction_list:
        raise RobovlaError("no instructions given")
    if len(image_list) != len(instruction_list):
        raise RobovlaError(f"got {len(image_list)} images but {len(instruction_list)} instructions")
    for i, text in enumerate(instruction_list):
        if not isinstance(text, str) or not text.strip():
            raise RobovlaError(f"instruction {i} is empty: every instruction must be a non-empty string")
    return image_list, instruction_list
