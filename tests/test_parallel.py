"""The parallel-decoding recipe (OpenVLA-OFT's): cameras, the state projector, K x D action positions decoded in one
forward pass by a discrete or an L1 head, training on chunk targets, checkpoints, serving and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import robovla
from robovla.errors import RobovlaError
from robovla.model.action_heads import parallel_attention_mask
from robovla.policy import Policy

STATS = {"tabletop_default": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0],
                                         "mask": [True] * 6 + [False]},
                              "proprio": {"q01": [-0.2, -0.13, 0.0, -0.01, -0.01, -1.2, 0.0],
                                          "q99": [0.2, 0.13, 0.18, 0.01, 0.01, 1.2, 1.0]}}}
CAMERAS = ("image", "wrist_image")


def parallel_recipe(head: str = "tokens", chunk: int = 3, state_tokens: int = 1) -> robovla.Recipe:
    return robovla.Recipe(cameras=CAMERAS, proprio=True, action_chunk=chunk, decoding="parallel", action_head=head,
                          action_dim=7, state_tokens=state_tokens, state_dim=7 if state_tokens else 0)


def parallel_model(head: str = "tokens", seed: int = 0, **recipe) -> robovla.VLA:
    config = robovla.preset("tiny")
    config.recipe = parallel_recipe(head, **recipe)
    return robovla.build_model(config, norm_stats=STATS, seed=seed)


def observation(seed: int, instruction: str = "put the red cube in the bowl") -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "instruction": instruction, "proprio": rng.uniform(-0.1, 0.1, 7)}


@pytest.fixture(scope="module", params=["tokens", "l1"])
def model(request):
    return parallel_model(request.param)


# ----------------------------------------------------------------------------------------------- attention
def test_the_action_block_attends_bidirectionally_only_within_itself():
    """Perturbing one action position's input moves every action position's output, earlier ones included,
    and no prefix position's; perturbing the prompt moves the actions."""
    model = parallel_model("tokens", seed=1)
    inputs = model.processor.model_inputs([observation(1)], ["push the cube"], [observation(1)["proprio"]],
                                          "tabletop_default")
    prefix = model.embed_prefix(inputs.pixel_values, inputs.state)
    embeds, mask, positions = model.multimodal_inputs(prefix, inputs.input_ids, inputs.attention_mask)
    slots = model.action_queries.slots
    base = model.action_queries(1, embeds.dtype)

    def hidden(sequence: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(1, embeds.shape[1], dtype=torch.long)
        full_positions = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(slots)], dim=1)
        with torch.no_grad():
            return model.language_model.model(inputs_embeds=sequence, attention_mask=parallel_attention_mask(keep, slots),
                                              position_ids=full_positions).last_hidden_state[0]

    reference = hidden(torch.cat([embeds, base], dim=1))
    moved = base.clone()
    moved[0, slots - 1] += 1.0  # the last action position
    after = hidden(torch.cat([embeds, moved], dim=1))
    length = embeds.shape[1]
    assert torch.allclose(after[:length], reference[:length], atol=1e-6)  # the prefix never sees the actions
    assert (after[length : length + slots - 1] - reference[length : length + slots - 1]).abs().amax(-1).min() > 1e-4
    prompt = embeds.clone()
    prompt[0, -1] += 1.0  # the prompt's last token
    changed = hidden(torch.cat([prompt, base], dim=1))
    assert (changed[length:] - reference[length:]).abs().amax(-1).min() > 1e-4


def test_the_mask_hides_padding_and_keeps_every_row_attending_somewhere():
    keep = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask = parallel_attention_mask(keep, slots=2)[:, 0]
    assert mask.shape == (2, 6, 6)
    assert not mask[0, 2:, :2].any()  # nothing real sees the padding
    assert mask[0, 0, 0] and mask[0, 1, 1]  # a padded position sees itself only
    assert mask[1, 2].tolist() == [True, True, True, False, False, False]  # the prefix stays causal
    assert mask[1, 4].all() and mask[1, 5].all()  # the action positions see all, each other included


# ------------------------------------------------------------------------------------------------- inference
def test_one_forward_pass_gives_the_whole_chunk_and_batches_equal_single_calls(model):
    policy = Policy(model, "tabletop_default")
    observations = [observation(2), observation(3, "stack the green cube on the red cube, slowly"), observation(4)]
    batched = policy.predict(observations)
    assert batched.actions.shape == (3, 3, 7) and batched.token_ids.shape == (3, 3, 7)
    assert batched.grounding is None and np.abs(batched.normalized).max() <= 1.0
    for k, one in enumerate(observations):  # different prompt lengths: the batch pads, the answer stays
        alone = policy.predict(one)
        np.testing.assert_allclose(alone.normalized[0], batched.normalized[k], atol=1e-5)
    assert np.array_equal(model.predict([{c: observations[0][c] for c in CAMERAS}], [observations[0]["instruction"]],
                                        "tabletop_default", [observations[0]["proprio"]]).token_ids,
                          batched.token_ids[:1])


def test_camera_order_is_the_recipes(model):
    """Patches enter camera by camera in the recipe's order; the dict's own order does not matter."""
    policy = Policy(model, "tabletop_default")
    one = observation(5)
    reordered = {"wrist_image": one["wrist_image"], "image": one["image"], "instruction": one["instruction"],
                 "proprio": one["proprio"]}
    assert np.array_equal(policy.predict(one).token_ids, policy.predict(reordered).token_ids)
    pixels = model.processor.pixel_values([one])
    front = model.processor.image_transform(one["image"])
    wrist = model.processor.image_transform(one["wrist_image"])
    assert torch.equal(pixels[0], torch.cat([front, wrist]))
    swapped = {**one, "image": one["wrist_image"], "wrist_image": one["image"]}
    with torch.no_grad():  # one backbone for every camera: swapping the images swaps the two blocks of patches
        patches = model.embed_patches(pixels)
        exchanged = model.embed_patches(model.processor.pixel_values([swapped]))
    n = patches.shape[1] // 2
    assert torch.allclose(exchanged[:, :n], patches[:, n:], atol=1e-6)
    assert torch.allclose(exchanged[:, n:], patches[:, :n], atol=1e-6)
    assert not torch.allclose(patches[:, :n], patches[:, n:], atol=1e-3)


def test_the_state_is_normalised_with_the_checkpoints_statistics(model, tmp_path):
    processor = model.processor
    state = np.array([0.1, -0.05, 0.09, 0.0, 0.005, 0.6, 0.5])
    normalised = processor.normalized_state(state, "tabletop_default")
    stats = STATS["tabletop_default"]["proprio"]
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    np.testing.assert_allclose((normalised + 1) / 2 * (q99 - q01) + q01, state, atol=1e-6)  # the round trip
    robovla.save_pretrained(model, tmp_path / "ckpt")
    loaded = robovla.load_pretrained(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.processor.normalized_state(state, "tabletop_default"), normalised)


def test_every_head_survives_save_and_load(model, tmp_path):
    policy = Policy(model, "tabletop_default")
    expected = policy.predict([observation(6), observation(7)])
    robovla.save_pretrained(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["robovla_recipe"]
    assert saved["decoding"] == "parallel" and saved["cameras"] == list(CAMERAS) and saved["state_tokens"] == 1
    loaded = Policy.from_pretrained(tmp_path / "ckpt", "tabletop_default")
    names = {name.split(".")[0] for name, _ in loaded.model.named_parameters()}
    assert {"action_queries", "state_projector"} <= names
    assert ("action_head" in names) == (model.recipe.action_head == "l1")
    again = loaded.predict([observation(6), observation(7)])
    assert np.array_equal(again.token_ids, expected.token_ids)
    np.testing.assert_allclose(again.normalized, expected.normalized, atol=1e-6)


def test_the_7b_configuration_with_this_recipe_builds_on_the_meta_device_with_exact_counts():
    config = robovla.preset("openvla-7b")
    config.recipe = robovla.Recipe(cameras=CAMERAS, proprio=True, action_chunk=8, decoding="parallel",
                                   action_head="l1", action_dim=7, state_tokens=1, state_dim=8)
    counts = robovla.parameter_counts(robovla.build_model(config, device="meta"))
    hidden = 4096
    assert counts["action_queries"] == 8 * 7 * hidden
    assert counts["state_projector"] == (8 * hidden + hidden) + (hidden * hidden + hidden)
    assert counts["action_head"] == 2 * 7 * hidden + (7 * hidden * hidden + hidden) + (hidden * hidden + hidden) \
        + (hidden * 7 + 7)
    assert counts["language_model"] == 6_738_939_904  # the backbone is the reference's, untouched
    assert counts["total"] == 7_692_596_679


def test_the_7b_parallel_forward_is_shape_correct_on_a_tiny_configuration():
    """The same code path as the 7B's (fused towers, Llama), on the tiny shapes, chunk 8 x 7 from one pass."""
    model = parallel_model("l1", chunk=8)
    inputs = model.processor.model_inputs([observation(8)] * 2, ["pick it up", "push the red cube"],
                                          [observation(8)["proprio"]] * 2, "tabletop_default")
    said = model.parallel_actions(inputs)
    assert said.token_ids is None and said.normalized.shape == (2, 8, 7)


# -------------------------------------------------------------------------------------------------- training
def test_training_examples_carry_chunk_targets_and_the_loss_falls(model):
    processor = model.processor
    chunk = np.tile(np.linspace(-0.5, 0.5, 3)[:, None], (1, 7))
    chunk[:, -1] = 1.0
    images = {camera: observation(9)[camera] for camera in CAMERAS}
    example = processor.training_example(images, "push the cube", chunk, "tabletop_default", observation(9)["proprio"])
    assert example["pixel_values"].shape[0] == 12  # two cameras x two backbones x RGB
    assert example["labels"].tolist() == processor.action_tokenizer.encode(
        processor.normalizer("tabletop_default").normalize(chunk)).reshape(-1).tolist()
    assert example["action_targets"].shape == (3, 7) and example["state"].shape == (7,)
    assert example["input_ids"].tolist() == processor.prompt_ids("push the cube")  # the prompt alone
    trained = parallel_model(model.recipe.action_head, seed=3)
    batch = trained.processor.collate([example, trained.processor.training_example(
        images, "push the cube to the left", -chunk, "tabletop_default", observation(9)["proprio"])])
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):  # the two instructions look alike to a fresh model: it takes ~50 steps to part them
        loss = trained(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_chunk_targets_hold_the_last_action_past_an_episodes_end(tmp_path):
    from test_train import make_dataset

    from robovla.data import open_dataset

    dataset = open_dataset(make_dataset(tmp_path / "d", episodes=2, frames=5), chunk_size=4)
    last = dataset[4]  # the first episode's last frame
    assert np.array_equal(last["action_chunk"], np.stack([dataset.actions[4]] * 4))
    assert np.array_equal(dataset[2]["action_chunk"], dataset.actions[[2, 3, 4, 4]])


def test_train_cli_options_make_the_recipe_and_refuse_a_chunk_longer_than_the_episodes(tmp_path):
    from test_train import make_dataset

    from robovla.train import TrainConfig, train

    data = make_dataset(tmp_path / "d", episodes=3, frames=6, size=64)
    base = dict(preset="tiny", datasets=[str(data)], steps=2, batch_size=2, precision="fp32", save_every=0,
                progress=False, proprio=True, decoding="parallel", state_tokens=1, cameras=["image"])
    summary = train(TrainConfig(out=str(tmp_path / "run"), action_chunk=4, action_head="l1", stop_at=1,
                                **{**base, "save_every": 1}))
    # resuming works although the L1 head never uses the LM head (it stays frozen: no gradient, no optimizer state)
    summary = train(TrainConfig(out=str(tmp_path / "run"), action_chunk=4, action_head="l1", resume=True,
                                **{**base, "save_every": 1}))
    assert summary.steps == 2
    model = robovla.load_pretrained(summary.checkpoint)
    assert model.recipe == robovla.Recipe(proprio=True, action_chunk=4, decoding="parallel", action_head="l1",
                                          action_dim=7, state_tokens=1, state_dim=7)
    assert np.isfinite(summary.final_l1)
    with pytest.raises(RobovlaError, match="shortest episode has 6 steps, fewer than the 8 actions per chunk"):
        train(TrainConfig(out=str(tmp_path / "long"), action_chunk=8, **base))
    with pytest.raises(RobovlaError, match="has no 'wrist_image' images"):
        train(TrainConfig(out=str(tmp_path / "wrist"), action_chunk=2, **{**base, "cameras": list(CAMERAS)}))


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_recipes_name_the_field():
    for fields, words in [({"decoding": "parallel"}, "'action_dim' must be >= 1"),
                          ({"action_head": "l1"}, "needs decoding 'parallel'"),
                          ({"decoding": "parallel", "action_dim": 7, "grounding": True}, "needs decoding 'autoregressive'"),
                          ({"state_tokens": 1, "state_dim": 7}, "needs 'proprio' true"),
                          ({"proprio": True, "state_tokens": 1}, "go together"),
                          ({"decoding": "sideways"}, "'decoding' is 'sideways'"),
                          ({"decoding": "parallel", "action_dim": 7, "action_head": "l1", "selection": "median"},
                           "leave it 'greedy'")]:
        with pytest.raises(RobovlaError, match=words):
            robovla.Recipe(**fields)


def test_bad_observations_name_what_is_wrong(model):
    policy = Policy(model, "tabletop_default")
    one = observation(10)
    with pytest.raises(RobovlaError, match="observation 0 has no 'wrist_image'"):
        policy.predict({k: v for k, v in one.items() if k != "wrist_image"})
    with pytest.raises(RobovlaError, match="proprio has 5 numbers, but this model's state projector reads 7"):
        policy.predict({**one, "proprio": np.zeros(5)})


# ---------------------------------------------------------------------------------------------------- serving
def test_the_server_answers_with_the_whole_chunk_over_both_protocols():
    from robovla.client import PolicyClient, WebsocketPolicyClient
    from robovla.serve import BackgroundServer, ServerConfig, create_app

    model = parallel_model("l1", chunk=4)
    one = observation(11)
    expected = Policy(model, "tabletop_default").predict(one).actions[0]
    config = ServerConfig(max_wait_ms=0.0)
    with BackgroundServer(create_app(model, config, "parallel")) as server:
        rest = PolicyClient(server.url)
        wrist = {"wrist_image": one["wrist_image"]}
        np.testing.assert_allclose(rest.act_chunk(one["image"], one["instruction"], proprio=one["proprio"],
                                                  cameras=wrist), expected, atol=1e-5)
        meta = rest.metadata()
        with WebsocketPolicyClient(f"ws://{server.host}:{server.port}") as ws:
            np.testing.assert_allclose(ws.act_chunk(one["image"], one["instruction"], proprio=one["proprio"],
                                                    cameras=wrist), expected, atol=1e-5)
        from robovla.client import PolicyServerError

        with pytest.raises(PolicyServerError) as refused:
            rest.act_chunk(one["image"], one["instruction"], proprio=one["proprio"])
    assert refused.value.status == 400 and refused.value.field == "wrist_image"
    assert meta["action_horizon"] == 4 and meta["cameras"]["wrist_image"] == ["wrist_image", "observation/wrist_image"]


# ------------------------------------------------------------------------------------------------- evaluation
def test_evaluation_renders_the_wrist_camera_for_a_policy_that_reads_it(tmp_path):
    from robovla.eval import CheckpointPolicy, EvalSettings, evaluate

    config = robovla.preset("tabletop-cpu")
    config.recipe = parallel_recipe("tokens", chunk=4)
    model = robovla.build_model(config, norm_stats=STATS, seed=4)
    policy = CheckpointPolicy(model)
    assert policy.wrist_camera
    result = evaluate(policy, EvalSettings(episodes=2, num_envs=2, progress=False))
    assert result["overall"]["n"] == 2 and result["policy"]["action_chunk"] == 4


@pytest.mark.slow  # about a minute and a half on 2 cores
def test_the_recipes_experiment_runs_end_to_end_and_resumes(tmp_path):
    from robovla.cli import main

    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["experiment", "recipes", "--quick", "--work", str(work), "--out", str(out)]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert set(document["arms"]) == {"reference", "parallel-tokens", "parallel-l1"}
    for arm in document["arms"].values():
        assert set(arm["evaluation"]["conditions"]) == set(document["suites"])
        assert arm["timing"]["batch_1"]["actions_per_second"] > 0
    assert document["arms"]["parallel-l1"]["recipe"]["action_head"] == "l1"
    assert (out / "report.md").read_text().count("| parallel-") >= 4 and (out / "success.png").exists()
    stages = json.loads((work / "experiment.json").read_text())["stages"]
    assert main(argv) == 0  # a rerun finds every stage done
    assert json.loads((work / "experiment.json").read_text())["stages"] == stages


def test_a_lerobot_dataset_gives_every_camera_by_name(tmp_path):
    from robovla.data import Episode, episode_table, open_dataset, write_lerobot_dataset

    frames, rng = 3, np.random.default_rng(0)
    cameras = {name: rng.integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8) for name in ("front", "wrist", "side")}
    episode = Episode("push the cube", np.zeros((frames, 7), np.float32), np.zeros((frames, 7), np.float32), cameras)
    folder = write_lerobot_dataset(tmp_path / "d", [episode_table(episode, fps=10.0, index=0)], fps=10.0,
                                   dataset_name="three", robot_type="synthetic")
    item = open_dataset(folder)[1]
    for name in ("front", "wrist", "side"):
        assert np.array_equal(item[name], cameras[name][1])
    assert np.array_equal(item["image"], cameras["front"][1]) and np.array_equal(item["wrist_image"], cameras["wrist"][1])
    item["image"][:] = 0  # an alias is a copy: changing one leaves the other
    assert np.array_equal(item["front"], cameras["front"][1])


def test_lora_fine_tuning_into_the_parallel_recipe_trains_the_new_parts_in_full(tmp_path):
    from test_train import make_dataset

    from robovla.train import TrainConfig, Trainer, train

    data = str(make_dataset(tmp_path / "d", episodes=2, frames=4, size=64))
    common = dict(datasets=[data], batch_size=2, precision="fp32", save_every=0, progress=False)
    base = train(TrainConfig(preset="tiny", steps=1, out=str(tmp_path / "base"), **common))
    trainer = Trainer(TrainConfig(checkpoint=base.checkpoint, preset=None, strategy="lora", lora_rank=4, steps=2,
                                  out=str(tmp_path / "lora"), proprio=True, state_tokens=1, action_chunk=2,
                                  decoding="parallel", action_head="l1", **common))
    trainable = [name for name, p in trainer.inner.named_parameters() if p.requires_grad]
    for part in ("action_queries", "action_head", "state_projector"):
        assert any(part in name and "lora_" not in name for name in trainable), part
    assert any("lora_A" in name for name in trainable)
    summary = trainer.run()
    merged = robovla.load_pretrained(summary.checkpoint)
    assert merged.recipe.decoding == "parallel" and merged.action_head is not None
    assert Policy(merged).predict({"image": observation(1)["image"], "instruction": "pick up the red cube",
                                   "proprio": np.zeros(7)}).actions.shape == (1, 2, 7)
