"""Batched prediction, the training forward pass, and input validation of predict_action."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import robovla
from conftest import CONFORMANCE, TINY_CHECKPOINT, case_image

from robovla.processing import ModelInputs

CASES = json.loads((CONFORMANCE / "cases.json").read_text())["cases"]


def test_batch_of_four_equals_per_example(tiny_vla):
    picks = [CASES[0], CASES[2], CASES[5], CASES[6]]  # different images, instruction lengths 4..15 words
    images = [case_image(c) for c in picks]
    instructions = [c["instruction"] for c in picks]
    lengths = {len(tiny_vla.processor.prompt_ids(t)) for t in instructions}
    assert len(lengths) > 1, "the batch must mix prompt lengths"
    batch_actions, batch_ids = tiny_vla.predict_action(images, instructions, "bridge_orig", return_token_ids=True)
    assert batch_ids.shape == (4, 7)
    for row, (image, text) in enumerate(zip(images, instructions)):
        actions, ids = tiny_vla.predict_action(image, text, "bridge_orig", return_token_ids=True)
        assert ids.tolist() == batch_ids[row].tolist()
        np.testing.assert_allclose(actions, batch_actions[row], atol=1e-12)


def test_batched_logits_match_unpadded(tiny_vla):
    """Padding between patches and text must not change any example's logits beyond float noise."""
    picks = [CASES[0], CASES[6]]
    processor = tiny_vla.processor
    pixel_values = processor.pixel_values([case_image(c) for c in picks])
    batch = processor.encode_prompts([c["instruction"] for c in picks])
    batched: list[torch.Tensor] = []
    tiny_vla.generate(ModelInputs(pixel_values, batch.input_ids, batch.attention_mask), 7, step_logits=batched)
    for row, case in enumerate(picks):
        single_ids = processor.encode_prompts([case["instruction"]]).input_ids
        alone: list[torch.Tensor] = []
        tiny_vla.generate(ModelInputs(pixel_values[row : row + 1], single_ids, None), 7, step_logits=alone)
        diff = (torch.stack(batched, 1)[row] - torch.stack(alone, 1)[0]).abs().max().item()
        assert diff < 1e-4


def test_restrict_to_action_tokens(tiny_vla):
    image = case_image(CASES[0])  # step 4 of this case picks a text token (20127) under full-vocab greedy
    _, ids = tiny_vla.predict_action(image, CASES[0]["instruction"], "bridge_orig", return_token_ids=True)
    assert not all(31744 <= t <= 31999 for t in ids)
    _, ids = tiny_vla.predict_action(
        image, CASES[0]["instruction"], "bridge_orig", return_token_ids=True, restrict_to_actions=True
    )
    assert all(31744 <= t <= 31999 for t in ids)


def test_forward_supervises_only_action_tokens_and_eos(tiny_vla):
    processor = tiny_vla.processor
    image = case_image(CASES[1])
    action = np.array([0.01, -0.02, 0.0, 0.05, -0.05, 0.1, 1.0])
    example = processor.training_example(image, "put spoon on towel", action, "bridge_orig")
    labels = example["labels"]
    supervised = labels[labels != -100]
    assert supervised.shape[0] == 8 and supervised[-1].item() == processor.tokenizer.eos_token_id
    assert torch.all((supervised[:7] >= 31744) & (supervised[:7] <= 31999))
    with torch.no_grad():
        full = tiny_vla(example["pixel_values"][None], example["input_ids"][None], labels=labels[None])
        sparse = tiny_vla(
            example["pixel_values"][None], example["input_ids"][None], labels=labels[None], full_logits=False
        )
    assert full.logits.shape[1] == 256 + example["input_ids"].shape[0]
    assert sparse.logits.shape == (8, 32064)
    torch.testing.assert_close(full.loss, sparse.loss, atol=1e-5, rtol=1e-5)
    # Teacher forcing on the model's own greedy tokens gives those tokens back as argmax.
    ids = processor.prompt_ids("put spoon on towel")
    greedy = tiny_vla.predict_action(image, "put spoon on towel", "bridge_orig", return_token_ids=True)[1]
    with torch.no_grad():
        out = tiny_vla(example["pixel_values"][None], torch.tensor([ids + greedy.tolist()]))
    assert out.logits[0, -8:-1].argmax(-1).tolist() == greedy.tolist()[:7]


def test_padded_forward_loss_equals_per_example(tiny_vla):
    processor = tiny_vla.processor
    examples = [
        processor.training_example(case_image(c), c["instruction"], np.linspace(-0.02, 0.02, 7), "bridge_orig")
        for c in (CASES[0], CASES[6])
    ]
    batch = processor.collate(examples)
    assert batch["attention_mask"] is not None  # the two prompts differ in length
    with torch.no_grad():
        batched = tiny_vla(**batch, full_logits=False)
        singles = [
            tiny_vla(e["pixel_values"][None], e["input_ids"][None], labels=e["labels"][None], full_logits=False)
            for e in examples
        ]
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in singles]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((224, 224), np.uint8), "HxWx3"),
        (np.zeros((224, 224, 4), np.uint8), "HxWx3"),
        (np.zeros((224, 224, 3), np.float32), "uint8"),
        (np.zeros((0, 224, 3), np.uint8), "empty"),
        ("not an image", "HxWx3 uint8 array"),
    ],
)
def test_bad_images_are_rejected(tiny_vla, image, message):
    with pytest.raises(robovla.RobovlaError, match=message):
        tiny_vla.predict_action(image, "pick up the cube", "bridge_orig")


def test_bad_instruction_and_unnorm_key(tiny_vla):
    image = case_image(CASES[0])
    with pytest.raises(robovla.RobovlaError, match="non-empty"):
        tiny_vla.predict_action(image, "   ", "bridge_orig")
    with pytest.raises(robovla.RobovlaError, match="bridge_orig, toy_kitchen"):
        tiny_vla.predict_action(image, "pick", "libero")
    with pytest.raises(robovla.RobovlaError, match="unnorm_key is required"):
        tiny_vla.predict_action(image, "pick")
    with pytest.raises(robovla.RobovlaError, match="2 images but 1 instructions"):
        tiny_vla.predict_action([image, image], ["pick"], "bridge_orig")


def test_single_dataset_needs_no_unnorm_key():
    config = robovla.preset("tiny")
    config.norm_stats = {"only": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}  # no mask: all true
    model = robovla.build_model(config)
    action = model.predict_action(np.zeros((32, 32, 3), np.uint8), "go")
    assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)


@pytest.mark.parametrize("mode", ["lean", "frozen"])
def test_compiled_inference_matches_eager(mode):
    """torch.compile'd vision, prefill and decode step give the eager path's tokens, in both compile modes."""
    model = robovla.load_pretrained(TINY_CHECKPOINT)
    picks = CASES[:3]
    images = [case_image(c) for c in picks]
    instructions = [c["instruction"] for c in picks]
    eager = model.predict(images, instructions, "bridge_orig")
    model.compile_inference(mode=mode)
    for _ in range(2):  # the second call runs the already-compiled graphs
        compiled = model.predict(images, instructions, "bridge_orig")
        np.testing.assert_array_equal(compiled.token_ids, eager.token_ids)
    single = model.predict_action(images[1], instructions[1], "bridge_orig", return_token_ids=True)[1]
    np.testing.assert_array_equal(single, eager.token_ids[1, 0])


@pytest.mark.slow  # ~30 s of compiling on 2 cores
def test_warm_up_compiles_what_later_batches_and_instructions_need():
    """After `warm_up`, batches of other sizes, padded or not, with new instructions compile nothing new."""
    from torch._dynamo.utils import counters

    from robovla.policy import WARM_UP_BATCHES, Policy

    model = robovla.load_pretrained(TINY_CHECKPOINT).compile_inference()
    calls = []
    Policy(model, "bridge_orig").warm_up(on_call=lambda *report: calls.append(report))
    assert [batch for batch, _, _ in calls] == [len(texts) for texts in WARM_UP_BATCHES]
    assert len({tokens for _, tokens, _ in calls}) == 3
    graphs = counters["stats"]["unique_graphs"]
    images, instructions = [case_image(c) for c in CASES[:6]], [c["instruction"] for c in CASES[:6]]
    for batch in (1, 4, 6):
        model.predict(images[:batch], instructions[:batch], "bridge_orig")
    model.predict(images[:2], [instructions[0]] * 2, "bridge_orig")  # unpadded
    assert counters["stats"]["unique_graphs"] == graphs


def test_compile_settings_apply_only_inside_their_scope():
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    from robovla.model.decoding import RECOMPILE_LIMIT, compile_settings

    before = (inductor_config.freezing, inductor_config.cpp.enable_concat_linear, dynamo_config.recompile_limit)
    with compile_settings("frozen"):
        assert inductor_config.freezing and inductor_config.cpp.enable_concat_linear
        assert dynamo_config.recompile_limit == RECOMPILE_LIMIT > 8
    with compile_settings("lean"):  # the weights stay inputs: one shared copy, cacheable graphs
        assert not inductor_config.freezing and dynamo_config.recompile_limit == RECOMPILE_LIMIT
    with compile_settings(None):
        assert not inductor_config.freezing
    with pytest.raises(ValueError, match="unknown compile mode"):
        with compile_settings("fast"):
            pass
    assert (inductor_config.freezing, inductor_config.cpp.enable_concat_linear,
            dynamo_config.recompile_limit) == before


def test_compiled_decode_step_merges_the_projections_that_share_an_input():
    """Compiled frozen, one decode step runs q/k/v as one GEMM and gate/up as one: 4 per layer + the head, not 7 + 1."""
    from torch.profiler import ProfilerActivity, profile

    model = robovla.load_pretrained(TINY_CHECKPOINT, dtype=torch.bfloat16).compile_inference(mode="frozen")
    image, instruction = case_image(CASES[0]), CASES[0]["instruction"]
    inputs = ModelInputs(model.processor.pixel_values([image]), model.processor.encode_prompts([instruction]).input_ids,
                         None)
    gemm_ops = {"mkldnn::_linear_pointwise", "mkl::_mkl_linear", "aten::mm", "aten::addmm"}

    def gemm_calls(num_tokens: int) -> int:
        model.generate(inputs, num_tokens)  # compiles outside the count
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.generate(inputs, num_tokens)
        return sum(event.name in gemm_ops for event in prof.events())

    layers = model.language_model.config.num_hidden_layers
    with torch.inference_mode():
        assert gemm_calls(3) - gemm_calls(2) == 4 * layers + 1


def test_bfloat16_prefix_attention_matches_the_fused_kernel(tiny_vla):
    """The CPU bf16 prefix attention (two matmuls + softmax) equals SDPA, with causal and padding masks."""
    import torch.nn.functional as F

    from robovla.model.decoding import StaticCacheDecoder

    decoder = StaticCacheDecoder(tiny_vla.language_model)
    heads, length, dim = decoder.num_heads, 40, decoder.head_dim
    q, k, v = (torch.randn(2, heads, length, dim, generator=torch.Generator().manual_seed(s)).to(torch.bfloat16)
               for s in range(3))
    keep = torch.ones(2, length, dtype=torch.bool)
    keep[1, 5:9] = False  # a padded row: keys 5..8 are padding
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for mask in (None, causal[None, None] & keep[:, None, None, :]):
        ours = decoder._prefix_attention(q, k, v, mask, decoder._prefix_bias(q, mask))
        fused = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                               is_causal=mask is None, scale=decoder.scaling)
        assert ours.dtype == torch.bfloat16
        assert (ours.float() - fused).abs().max().item() < 0.03


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_runs_the_last_layer_for_the_last_position_only(dtype):
    """The prefill returns the last position's hidden state alone, and its logits are the full forward's, with
    and without left padding (the KV cache still covers every position: see the conformance tests)."""
    from robovla.model.decoding import StaticCacheDecoder

    lm = robovla.load_pretrained(TINY_CHECKPOINT, dtype=dtype).language_model
    decoder = StaticCacheDecoder(lm)
    batch, length = 2, 30
    embeds = torch.randn(batch, length, lm.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(dtype)
    padded = torch.ones(batch, length, dtype=torch.long)
    padded[1, 5:9] = 0  # row 1's prompt is left-padded: the padding sits between the patches and the prompt
    for mask in (None, padded):
        positions = torch.arange(length).expand(batch, -1) if mask is None else (mask.cumsum(1) - 1).clamp(min=0)
        prefix_mask = None if mask is None else (
            torch.ones(length, length, dtype=torch.bool).tril()[None, None] & mask[:, None, None, :].bool())
        shape = (batch, decoder.num_kv_heads, length, decoder.head_dim)
        keys = [torch.zeros(shape, dtype=dtype) for _ in lm.model.layers]
        values = [torch.zeros(shape, dtype=dtype) for _ in lm.model.layers]
        cos, sin = lm.model.rotary_emb(embeds, positions)
        with torch.inference_mode():
            hidden, _ = decoder._prefill(embeds, cos, sin, keys, values, prefix_mask)
            ours = decoder._logits(hidden)
            full = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        assert hidden.shape == (batch, 1, lm.config.hidden_size)
        tolerance = 1e-4 if dtype == torch.float32 else 0.1
        assert (ours - full).abs().max().item() < tolerance * max(1.0, full.abs().max().item())


def test_a_batch_invariant_policy_answers_each_observation_as_if_alone(monkeypatch):
    """bf16: every row of a mixed-length batch equals that observation predicted alone, one model call each."""
    from robovla.policy import Policy

    model = robovla.load_pretrained(TINY_CHECKPOINT, dtype=torch.bfloat16)
    picks = [CASES[0], CASES[2], CASES[5], CASES[6]]
    batch = [{"image": case_image(c), "instruction": c["instruction"]} for c in picks]
    policy = Policy(model, "bridge_orig", batch_invariant=True)
    alone = [policy.predict(o) for o in batch]
    calls = []
    prefill = model.prefill
    monkeypatch.setattr(model, "prefill", lambda inputs, *a, **k: calls.append(len(inputs.input_ids)) or
                        prefill(inputs, *a, **k))
    together = policy.predict(batch)
    assert calls == [1, 1, 1, 1]
    np.testing.assert_array_equal(together.token_ids, np.concatenate([p.token_ids for p in alone]))
    np.testing.assert_array_equal(together.actions, np.concatenate([p.actions for p in alone]))
