"""Greedy action decoding over a Llama's own modules with a preallocated KV cache.

transformers' generic path grows its cache by concatenation and rebuilds masks every step; an action is only
~7 tokens after a ~300-token prefix, so those costs are a large share of the decode time. Here the cache is
allocated once for prefix + actions, each step writes one slot in place, and single-query attention is two
small matmuls. The norms, projections, rotary tables and MLPs are the model's own modules, so the numbers match
the transformers path (the conformance tests hold both to the reference's logits).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from robovla.config import SELECTIONS


CAPACITY_MULTIPLE = 32


RECOMPILE_LIMIT = 64


COMPILE_MODES = ("lean", "frozen")


@contextlib.contextmanager
def compile_settings(mode: str | None = "lean"):
    """The compiler settings of robovla's compiled inference, scoped to its calls (only compiles read them).

    Both modes allow more variants per function than dynamo's default of 8: its limit counts per code object, so
    every model and batch-size bucket of a process shares it, and past it dynamo runs the function eagerly with a
    warning (a benchmark of four models hit it).
    - "lean": the weights stay the graphs' inputs, so every compiled shape reads the one set the model holds, and
      the compiled code does not depend on their values (so it can be cached across restarts: `compile_cache`).
    - "frozen": the weights become constants (inductor's freezing): pre-packed GEMM layouts, and linears that share
      an input (q/k/v; gate/up) merged into one GEMM. Each compiled shape keeps its own packed copy, and packed
      (mkldnn) constants cannot be cached, so every start compiles from nothing.
    `None`: eager, nothing patched.
    """
    if mode is None:
        yield
        return
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; valid: {', '.join(COMPILE_MODES)}")
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor = {"freezing": True, "cpp.enable_concat_linear": True} if mode == "frozen" else {"freezing": False}
    with inductor_config.patch(inductor), dynamo_config.patch(recompile_limit=RECOMPILE_LIMIT):
        yield


def compile_function(fn, mode: str):
    """`torch.compile(fn)` for a compile mode. "lean" makes every dimension dynamic from the first call: batch
    sizes, prompt lengths and cache sizes share one graph (sizes 0 and 1 still get their own). "frozen" (robovla's
    earlier default, kept as it was) lets dynamo specialise on the first size and compile a dynamic graph at the
    second, so a shape seen once costs a graph of its own."""
    return torch.compile(fn, dynamic=True if mode == "lean" else None)


def pick_tokens(logits: torch.Tensor, token_range: tuple[int, int] | None, selection: str = "greedy") -> torch.Tensor:
    """One decoding step's ids [B] from logits [B, V].

    "greedy" takes the argmax (the reference). The others need `token_range` (the action bins, ordered by value).
    "median" takes the bin at the median of the step's distribution: a continuous action spreads its mass over
    many neighbouring bins, so the single likeliest bin is often a spike such as "exactly zero" even when most of
    the mass says "move"; the median follows the mass. "sample" draws from it (torch's global RNG).
    """
    if token_range is None:
        return logits.argmax(dim=-1)
    lo, hi = token_range
    if selection == "greedy":
        return logits[:, lo:hi].argmax(dim=-1) + lo
    probs = logits[:, lo:hi].float().softmax(dim=-1)
    if selection == "sample":
        return torch.multinomial(probs, 1)[:, 0] + lo
    below_half = (probs.cumsum(dim=-1) < 0.5).sum(dim=-1)
    return below_half.clamp(max=hi - lo - 1) + lo


@dataclass(frozen=True)
class Decoding:
    """How each generated id is chosen (the per-call part; the checkpoint's default is `recipe.selection`)."""

    selection: str = "greedy"  # one of SELECTIONS (see `pick_tokens`)
    restrict_to_actions: bool = False  # choose among the action bins only (any selection but greedy does)
    greedy_steps: int = 0  # the first ids take the argmax whatever `selection` says (grounding tokens)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid: {', '.join(SELECTIONS)}")


@dataclass
class DecodeState:
    """A batch's prefix after `StaticCacheDecoder.prefill`: its KV cache (room for the ids still to come), the
    logits that choose the first id, and, when asked for, one layer's hidden states over the prefix."""

    keys: list[torch.Tensor]  # per layer [B, KVH, capacity, D]
    values: list[torch.Tensor]
    key_bias: torch.Tensor  # [B, 1, 1, capacity] 0 where a slot may be attended, -inf elsewhere
    length: int  # prefix positions (the cache slots written so far)
    num_tokens: int  # ids `decode` generates
    position: torch.Tensor  # [B, 1] position id of the first generated token
    logits: torch.Tensor  # [B, V] float32, the prefix's last position
    captured: torch.Tensor | None = None  # [B, L, H] entering the captured layer


class StaticCacheDecoder:
    """Prefix pass + one in-place cache slot per generated token, for a `LlamaForCausalLM`."""

    def __init__(self, language_model, compile: str | None = None) -> None:
        self.lm = language_model
        self.compile = compile  # a compile mode (COMPILE_MODES) or None: eager
        self._compiled_fns: dict[str, object] = {}
        config = language_model.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5

    def _project(self, layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        attn = layer.self_attn
        shape = (*hidden.shape[:-1], -1, self.head_dim)
        q = attn.q_proj(hidden).view(shape).transpose(1, 2)
        k = attn.k_proj(hidden).view(shape).transpose(1, 2)
        v = attn.v_proj(hidden).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def _finish_layer(self, layer, residual: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = attended.shape
        hidden = residual + layer.self_attn.o_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def _prefill(self, inputs_embeds, cos, sin, keys, values, prefix_mask,
                 capture_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prefix through every layer, filling the first slots of the cache; returns the last position's
        hidden state [B, 1, H], and with `capture_layer` the whole prefix's hidden states entering that layer.

        The last layer's keys and values are needed at every position (the cache), but its attention output,
        output projection and MLP only at the last one, the position that predicts the first token
        (prompts are left-padded, so it is every row's last real token).
        """
        length = inputs_embeds.shape[1]
        hidden = inputs_embeds
        captured = None
        bias = self._prefix_bias(inputs_embeds, prefix_mask)  # once for all layers
        last = len(self.lm.model.layers) - 1
        for index, layer in enumerate(self.lm.model.layers):
            if index == capture_layer:
                captured = hidden
            q, k, v = self._project(layer, layer.input_layernorm(hidden), cos, sin)
            keys[index][:, :, :length] = k
            values[index][:, :, :length] = v
            if index == last:
                q, hidden = q[:, :, -1:], hidden[:, -1:]
                prefix_mask = None if prefix_mask is None else prefix_mask[..., -1:, :]
                bias = None if bias is None else bias[..., -1:, :]
            attended = self._prefix_attention(q, k, v, prefix_mask, bias, causal=index != last)
            hidden = self._finish_layer(layer, hidden, attended)
        return hidden, captured

    @staticmethod
    def _prefix_bias(inputs: torch.Tensor, prefix_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The additive causal (+ padding) mask for the bf16 CPU attention path; None where the fused kernel runs.

        On the CPU in bfloat16, two matmuls and a softmax in bfloat16 take about half the time of PyTorch's
        CPU flash kernel at prefix lengths (~280 tokens: 1.2 vs 2.1-2.8 ms a layer for 16 heads of 64, measured);
        elsewhere, and in float32 where the two are even, the fused kernel runs.
        """
        if inputs.device.type != "cpu" or inputs.dtype != torch.bfloat16:
            return None
        if prefix_mask is None:
            length = inputs.shape[-2]
            prefix_mask = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
        return torch.zeros(prefix_mask.shape, dtype=inputs.dtype, device=inputs.device).masked_fill(
            ~prefix_mask, float("-inf"))

    def _prefix_attention(self, q, k, v, prefix_mask: torch.Tensor | None, bias: torch.Tensor | None,
                          causal: bool = True) -> torch.Tensor:
        """Attention over the prefix: the fused kernel, or with `bias` (`_prefix_bias`) two bf16 matmuls and a
        softmax. `causal=False` for the last layer's single query (the last position), which sees every key.

        The caller says which, rather than reading it off q's length: once dynamo makes the length dynamic,
        `q.shape[-2] > 1` is symbolic, SDPA's `is_causal` refuses it, and the graph breaks into per-layer pieces.
        """
        if bias is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=prefix_mask, is_causal=causal and prefix_mask is None, scale=self.scaling,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling + bias
        return torch.matmul(scores.softmax(dim=-1), v)

    def _step(self, embeds, cos, sin, keys, values, key_bias, slot_index) -> torch.Tensor:
        """One token through every layer: write its cache slot, attend over the whole (masked) cache.

        Shapes never change between steps (the cache is attended in full; unwritten slots are masked), so a
        compiled version of this function is built once per batch size and cache length.
        """
        batch = embeds.shape[0]
        groups = self.num_heads // self.num_kv_heads
        hidden = embeds
        for index, layer in enumerate(self.lm.model.layers):
            q, k, v = self._project(layer, layer.input_layernorm(hidden), cos, sin)
            keys[index].index_copy_(2, slot_index, k)
            values[index].index_copy_(2, slot_index, v)
            # grouped heads: [B, KVH, groups, D] queries against [B, KVH, S, D] keys, softmax in float32
            query = q.float().reshape(batch, self.num_kv_heads, groups, self.head_dim)
            scores = torch.matmul(query, keys[index].float().transpose(-1, -2)) * self.scaling + key_bias
            attended = torch.matmul(scores.softmax(dim=-1), values[index].float()).to(hidden.dtype)
            hidden = self._finish_layer(layer, hidden, attended.reshape(batch, self.num_heads, 1, self.head_dim))
        return self._logits(hidden)

    def _compiled(self, name: str):
        if name not in self._compiled_fns:
            self._compiled_fns[name] = compile_function(getattr(self, "_" + name), self.compile)
        return self._compiled_fns[name]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, 1, H] (the prefill's or a step's one position) -> float32 logits [B, V]."""
        return self.lm.lm_head(self.lm.model.norm(hidden))[:, -1].float()

    @torch.inference_mode()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                num_tokens: int, capture_layer: int | None = None) -> DecodeState:
        """The prefix in one pass (causal + padding attention), with a cache sized for `num_tokens` more ids.

        With `capture_layer` the state keeps the prefix's hidden states entering that layer [B, L, H] (what a
        grounding pointer reads)."""
        model = self.lm.model
        batch, length, _ = inputs_embeds.shape
        # prefix and generated slots each rounded up, so prompts of similar length share one compiled step, and so
        # do calls for 1 to 32 tokens (the benchmark's 1-token prefix timing and its 7-token call among them)
        capacity = sum(-(-n // CAPACITY_MULTIPLE) * CAPACITY_MULTIPLE for n in (length, num_tokens))
        dtype, device = inputs_embeds.dtype, inputs_embeds.device
        cache_shape = (batch, self.num_kv_heads, capacity, self.head_dim)
        # zeros, not empty: masked slots get probability 0, and 0 * NaN garbage would still be NaN
        keys = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in model.layers]
        values = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in model.layers]
        # additive key mask over the whole cache: padding and not-yet-written slots stay -inf
        key_bias = torch.full((batch, 1, 1, capacity), float("-inf"), dtype=torch.float32, device=device)
        key_bias[..., :length] = 0.0 if attention_mask is None else torch.where(
            attention_mask[:, None, None, :].bool(), 0.0, float("-inf"))
        prefix_mask = None
        if attention_mask is not None:
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
            prefix_mask = causal[None, None] & attention_mask[:, None, None, :].bool()
        cos, sin = model.rotary_emb(inputs_embeds, position_ids)
        prefill_fn = self._compiled("prefill") if self.compile else self._prefill
        with compile_settings(self.compile):
            hidden, captured = prefill_fn(inputs_embeds, cos, sin, keys, values, prefix_mask, capture_layer)
        return DecodeState(keys, values, key_bias, length, num_tokens, position_ids[:, -1:] + 1,
                           self._logits(hidden), captured)

    @torch.inference_mode()
    def decode(self, state: DecodeState, token_range: tuple[int, int] | None = None, selection: str = "greedy",
               greedy_steps: int = 0, forced: torch.Tensor | None = None,
               step_logits: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Ids [B, state.num_tokens] after `prefill`; `token_range` (lo, hi) restricts the choice to ids lo..hi-1.

        `selection` says how each step picks its token (see `pick_tokens`), after the first `greedy_steps`, which
        take the argmax. `forced` [B, F <= num_tokens] holds ids to emit instead of choosing (-1: choose): later
        tokens are conditioned on them. If `step_logits` is a list, each step's logits [B, V] are appended."""
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}; valid: {', '.join(SELECTIONS)}")
        if selection != "greedy" and token_range is None:
            raise ValueError(f"{selection} selection needs token_range (the action bins)")
        rotary = self.lm.model.rotary_emb
        device = state.logits.device
        forced = None if forced is None else forced.to(device)
        generated = []
        position, logits = state.position, state.logits
        step_fn = self._compiled("step") if self.compile else self._step
        for step in range(state.num_tokens):
            if step_logits is not None:
                step_logits.append(logits)
            token = pick_tokens(logits, token_range, "greedy" if step < greedy_steps else selection)
            if forced is not None and step < forced.shape[1]:
                token = torch.where(forced[:, step] >= 0, forced[:, step], token)
            generated.append(token)
            if step + 1 == state.num_tokens:
                break
            slot = state.length + step
            state.key_bias[..., slot] = 0.0
            embeds = self.lm.get_input_embeddings()(token[:, None])
            cos, sin = rotary(embeds, position)
            slot_index = torch.tensor([slot], device=device)
            with compile_settings(self.compile):
                logits = step_fn(embeds, cos, sin, state.keys, state.values, state.key_bias, slot_index)
            position = position + 1
        return torch.stack(generated, dim=1)
