"""Every golden case recorded from the reference OpenVLA code, reproduced from the checkpoint folder alone."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import CONFORMANCE, case_arrays, case_image

from robovla.processing import ModelInputs

CASES = json.loads((CONFORMANCE / "cases.json").read_text())["cases"]
LOGIT_TOL = 2e-4
FEATURE_TOL = 1e-4


@pytest.fixture(scope="module", params=CASES, ids=[c["case_id"] for c in CASES])
def run(request, tiny_vla):
    """Run one case through our processing + model, keeping every intermediate the golden data pins."""
    case = request.param
    image = case_image(case)
    processor = tiny_vla.processor
    pixel_values = processor.pixel_values([image])
    with torch.inference_mode():
        featurizer = tiny_vla.vision_backbone.featurizer
        features = tiny_vla.vision_backbone(pixel_values)
        projected = tiny_vla.projector(features)
    d1 = featurizer.embed_dim
    prompts = processor.encode_prompts([case["instruction"]])
    step_logits: list[torch.Tensor] = []
    tokens = tiny_vla.generate(ModelInputs(pixel_values, prompts.input_ids, None), 7, step_logits=step_logits)
    actions, token_ids = tiny_vla.predict_action(image, case["instruction"], case["unnorm_key"], return_token_ids=True)
    return {
        "case": case,
        "arrays": case_arrays(case),
        "pixel_values": pixel_values.numpy(),
        "featurizer": features[0, :, :d1].numpy(),
        "fused": features[0, :, d1:].numpy(),
        "projector": projected[0].numpy(),
        "input_ids": prompts.input_ids[0].tolist(),
        "step_logits": torch.stack(step_logits, dim=1)[0].numpy(),
        "tokens": tokens[0].tolist(),
        "actions": actions,
        "token_ids": token_ids.tolist(),
    }


def test_prompt_and_input_ids(run, tiny_vla):
    case = run["case"]
    from robovla import build_prompt

    assert build_prompt(case["instruction"]) == case["prompt"]
    assert tiny_vla.processor.tokenizer.encode(case["prompt"]) == case["input_ids"]
    assert tiny_vla.processor.tokenizer.tokens(case["input_ids"]) == case["input_tokens"]
    assert run["input_ids"] == case["input_ids_passed_to_generate"]


def test_pixel_values(run):
    golden = run["case"]["pixel_values"]
    pv = run["pixel_values"]
    assert list(pv.shape) == golden["shape"]
    flat = pv.reshape(-1)
    np.testing.assert_allclose(flat[:16], golden["first16"], atol=1e-6)
    np.testing.assert_allclose(flat[::9973], golden["strided_sample_every_9973"], atol=1e-6)
    np.testing.assert_allclose(pv[0].mean(axis=(1, 2)), golden["per_channel_mean"], atol=1e-6)
    assert hashlib.sha256(pv.astype("<f4").tobytes()).hexdigest() == golden["sha256_f32le"]
    if "pixel_values" in run["arrays"]:
        np.testing.assert_allclose(pv[0], run["arrays"]["pixel_values"], atol=1e-6)


def test_features(run):
    arrays = run["arrays"]
    assert np.abs(run["featurizer"] - arrays["featurizer_out"]).max() <= FEATURE_TOL
    assert np.abs(run["fused"] - arrays["fused_featurizer_out"]).max() <= FEATURE_TOL
    assert np.abs(run["projector"] - arrays["projector_out"]).max() <= FEATURE_TOL
    np.testing.assert_allclose(run["case"]["features"]["projector_out_sum"], run["projector"].sum(), rtol=1e-4)


def test_logits_every_step(run):
    arrays = run["arrays"]
    logits = run["step_logits"]
    assert logits.shape == (7, 32064)
    assert np.abs(logits[0] - arrays["step0_logits"]).max() <= LOGIT_TOL
    assert np.abs(logits[:, 31744:32064] - arrays["step_logits_ids_31744_to_32063"]).max() <= LOGIT_TOL
    for step, golden in enumerate(run["case"]["steps"]):
        top5 = np.argsort(-logits[step])[:5].tolist()
        assert top5 == golden["top5_ids"]
        np.testing.assert_allclose(logits[step][top5], golden["top5_logits"], atol=LOGIT_TOL)


def test_action_tokens_and_actions(run, tiny_vla):
    case = run["case"]
    assert run["tokens"] == case["generated_action_token_ids"]
    assert run["token_ids"] == case["generated_action_token_ids"]
    tokenizer = tiny_vla.processor.action_tokenizer
    assert tokenizer.bin_indices(np.array(run["token_ids"])).tolist() == case["discretized_bin_indices"]
    np.testing.assert_allclose(tokenizer.decode(np.array(run["token_ids"])), case["normalized_actions"], atol=1e-12)
    np.testing.assert_allclose(run["actions"], case["unnormalized_action"], atol=1e-12)


def test_action_decoding_table(conformance_cases):
    from robovla import ActionTokenizer

    table = conformance_cases["action_decoding"]
    tokenizer = ActionTokenizer(vocab_size=32000, n_bins=256)
    np.testing.assert_allclose(tokenizer.bins, table["bins"], atol=1e-15)
    np.testing.assert_allclose(tokenizer.bin_centers, table["bin_centers"], atol=1e-15)
    decode = table["decode_examples"]
    np.testing.assert_allclose(tokenizer.decode(np.array(decode["token_ids"])), decode["normalized"], atol=1e-15)
    encode = table["encode_examples"]
    assert tokenizer.encode(np.array(encode["actions"])).tolist() == encode["token_ids"]
