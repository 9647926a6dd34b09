"""The grounding pointer: a head that picks the patch of each named object; its estimate fills the grounding tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import robovla
import robovla.model.vla  # noqa: F401  (torch's compiler stack must load before any EGL context)
from robovla.cli import main
from robovla.errors import RobovlaError
from robovla.model.pointer import CONFIG_KEY, GroundingPointer, PointerConfig, compact_text, prefix_parts
from robovla.policy import Policy
from robovla.sim import get_embodiment
from robovla.train.pointer import FeatureCache, PointerFitConfig, evaluate_pointer, train_pointer

STATS = {
    "tabletop_default": {
        "action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]},
        "proprio": {"q01": [-0.2] * 7, "q99": [0.2] * 7},
        "grounding": {"q01": [-0.5, -0.5, -0.5, -0.5], "q99": [0.5, 0.5, 0.5, 0.5]},  # the camera sees all of it
    }
}
STATE = np.zeros(7)


def pointer_model(layer: int = 1) -> robovla.VLA:
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True, grounding=True, grounding_source="pointer")
    config.extra[CONFIG_KEY] = PointerConfig(layer=layer, width=16, heads=2).to_dict()
    model = robovla.build_model(config, norm_stats=STATS, seed=3)
    grid = 16
    model.grounding_pointer.patch_xy.copy_(torch.as_tensor(get_embodiment("default").table_points(grid)))
    return model.eval()


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_table_points_reproject_to_their_cells_through_mujocos_camera():
    """Each cell's table point, projected through the rendered scene's own camera, lands in that cell."""
    pytest.importorskip("mujoco")
    from robovla.sim import make_env

    for name in ("default", "sideview", "lab2"):
        env = make_env("tabletop-train", embodiment=name, image_size=64)
        env.reset(seed=0)
        model, data = env._model, env._data
        camera = model.camera("front")
        position, rotation = data.cam_xpos[camera.id], data.cam_xmat[camera.id].reshape(3, 3)
        focal = 32 / np.tan(np.radians(model.cam_fovy[camera.id]) / 2)
        env.close()
        grid, height = 8, 0.02
        points = get_embodiment(name).table_points(grid, height)
        for cell, (x, y) in enumerate(points):
            local = rotation.T @ (np.array([x, y, height]) - position)  # camera looks along its -z
            column = 32 + focal * local[0] / -local[2]
            row = 32 - focal * local[1] / -local[2]
            assert (int(row // 8), int(column // 8)) == divmod(cell, grid), (name, cell)


def test_compact_text_moves_each_rows_tokens_to_the_front_in_order():
    hidden = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    text, kept = compact_text(hidden, mask, max_text=6)
    assert text[0, :3, 0].tolist() == [2, 3, 4] and text[1, :4, 0].tolist() == [6, 7, 8, 9]
    assert kept.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]


def test_positions_follow_the_likeliest_patch_and_the_loss_prefers_the_true_one():
    pointer = GroundingPointer(PointerConfig(layer=0, roles=1, width=8, heads=2), hidden_size=8, num_patches=16)
    pointer.patch_xy.copy_(torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
                           .view(16, 2).flip(-1) * 0.1)  # cell (row, col) at x = 0.1 col, y = 0.1 row
    logits = torch.full((1, 1, 16), -30.0)
    logits[0, 0, 6] = 10.0  # row 1, col 2
    assert torch.allclose(pointer.positions(logits), torch.tensor([[0.2, 0.1]]), atol=1e-4)
    logits[0, 0, 7] = 10.0  # two equal neighbours: halfway between them
    assert torch.allclose(pointer.positions(logits), torch.tensor([[0.25, 0.1]]), atol=1e-4)
    truth = torch.tensor([[0.2, 0.1]])
    right, wrong = torch.full((1, 1, 16), 0.0), torch.full((1, 1, 16), 0.0)
    right[0, 0, 6], wrong[0, 0, 9] = 5.0, 5.0
    assert pointer.loss(right, truth) < pointer.loss(wrong, truth)


def test_a_role_without_a_known_place_adds_nothing_to_the_loss():
    """A referring question names one thing: its goal pair is NaN, and the loss is the target role's alone."""
    torch.manual_seed(0)
    pointer = GroundingPointer(PointerConfig(layer=0, roles=2, width=8, heads=2), hidden_size=8, num_patches=16)
    pointer.patch_xy.copy_(torch.rand(16, 2))
    logits = torch.randn(3, 2, 16, requires_grad=True)
    truth = torch.rand(3, 4)
    alone = GroundingPointer(PointerConfig(layer=0, roles=1, width=8, heads=2), hidden_size=8, num_patches=16)
    alone.patch_xy.copy_(pointer.patch_xy)
    truth[:, 2:] = float("nan")
    loss = pointer.loss(logits, truth)
    assert torch.isfinite(loss) and torch.allclose(loss, alone.loss(logits[:, :1], truth[:, :2]))
    loss.backward()
    assert logits.grad[:, 1].abs().sum() == 0 and logits.grad[:, 0].abs().sum() > 0


def synthetic_scenes(count: int, seed: int, grid: int = 4, width: int = 16):
    """Three coloured objects on a grid and an instruction naming two of them by colour: only the words say
    which (the colour's word vector differs from its look), so a pointer that scores well has learned the binding."""
    rng = np.random.default_rng(seed)
    looks, words = torch.randn(4, width, generator=torch.Generator().manual_seed(0)), \
        torch.randn(6, width, generator=torch.Generator().manual_seed(1))  # 4 colour words + "the" + "to"
    xy = torch.stack(torch.meshgrid(torch.arange(grid * 1.0), torch.arange(grid * 1.0), indexing="ij"), -1)
    xy = xy.view(-1, 2).flip(-1) * 0.1
    patches = torch.randn(count, grid * grid, width) * 0.3
    text = torch.zeros(count, 8, width)
    labels = torch.zeros(count, 4)
    for k in range(count):
        cells = rng.choice(grid * grid, 3, replace=False)
        colours = rng.choice(4, 3, replace=False)
        for cell, colour in zip(cells, colours):
            patches[k, cell] += looks[colour]
        target, goal = rng.choice(3, 2, replace=False)
        text[k, :5] = torch.stack([words[4], words[colours[target]], words[5], words[4], words[colours[goal]]])
        labels[k] = torch.cat([xy[cells[target]], xy[cells[goal]]])
    mask = torch.zeros(count, 8, dtype=torch.bool)
    mask[:, :5] = True
    cache = FeatureCache(patches.half(), text.half(), mask, labels, np.arange(count), np.zeros(count, dtype=int))
    return cache, xy


def test_pointer_learns_which_object_the_words_name():
    torch.manual_seed(0)
    cache, xy = synthetic_scenes(1200, seed=0)
    pointer = GroundingPointer(PointerConfig(layer=0, width=32, heads=2, max_text=8, target_sigma=0.03), 16, 16)
    pointer.patch_xy.copy_(xy)
    config = PointerFitConfig(checkpoint="", datasets=[], out="", steps=600, batch_size=64, lr=3e-3)
    rows = np.arange(1000)
    before = evaluate_pointer(pointer, cache, np.arange(1000, 1200))
    history = train_pointer(pointer, cache, rows, np.arange(1000, 1200), config, progress=False)
    after = evaluate_pointer(pointer, cache, np.arange(1000, 1200))
    assert (before <= 0.05).mean() < 0.5
    assert (after <= 0.05).mean(0).min() >= 0.9, after.mean(0)  # scenes it never trained on
    assert history[-1]["step"] == 600 and len(history[-1]["holdout_within"]) == 2


def test_referring_questions_teach_the_pointer_a_word_robot_data_never_uses():
    """Robot rows name colours 0-2 only; referring rows ("the <colour>", target role alone, goal NaN) name all four.
    Trained on both, the pointer finds colour 3's object as a robot instruction's target; on robot rows alone, it
    cannot. The same check as the tabletop's: a colour word learnt only from vision-language data."""
    torch.manual_seed(0)
    cache, xy = synthetic_scenes(3000, seed=2)
    words = cache.text[:, 1].float()  # each row's target colour word
    colour_words = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))[:4]
    target = (words[:, None] - colour_words[None]).norm(dim=-1).argmin(dim=1).numpy()
    goal = (cache.text[:, 4].float()[:, None] - colour_words[None]).norm(dim=-1).argmin(dim=1).numpy()
    robot = np.flatnonzero((target != 3) & (goal != 3))[:1200]
    unseen = np.flatnonzero(target == 3)[-200:]  # robot-format rows whose target's word the robot rows never had
    referring = np.setdiff1d(np.arange(1800), np.concatenate([robot, unseen]))[:1200]
    cache.text[referring, 2:] = 0  # "the <colour>": the target alone
    cache.text_mask[referring, 2:] = False
    cache.grounding[referring, 2:] = float("nan")
    config = PointerFitConfig(checkpoint="", datasets=[], out="", steps=500, batch_size=64, lr=3e-3)
    shares = []
    for rows in (robot, np.concatenate([robot, referring])):
        torch.manual_seed(0)
        pointer = GroundingPointer(PointerConfig(layer=0, width=32, heads=2, max_text=8, target_sigma=0.03), 16, 16)
        pointer.patch_xy.copy_(xy)
        train_pointer(pointer, cache, rows, np.zeros(0, dtype=np.int64), config, progress=False)
        shares.append(float((evaluate_pointer(pointer, cache, unseen)[:, 0] <= 0.05).mean()))
    assert shares[0] < 0.5 and shares[1] >= 0.8, shares


def test_a_policy_emits_the_pointers_estimate_as_grounding_tokens():
    model = pointer_model()
    images = [picture(1), picture(2)]
    instructions = ["push the red cube to the blue square", "stack the green cube on the red cube"]
    observations = [{"image": image, "instruction": text, "proprio": STATE} for image, text in zip(images, instructions)]
    pointed = Policy(model, "tabletop_default").predict(observations)
    # the same estimate, computed from the full transformers forward pass, given as grounding
    processor = model.processor
    inputs = processor.model_inputs(images, instructions, [STATE, STATE], "tabletop_default")
    patches = model.embed_patches(inputs.pixel_values)
    embeds, mask, positions = model.multimodal_inputs(patches, inputs.input_ids, inputs.attention_mask)
    pointer = model.grounding_pointer
    with torch.no_grad():
        hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                            output_hidden_states=True).hidden_states[1]
        estimate = pointer.positions(pointer(*prefix_parts(hidden, mask, patches.shape[1], pointer.config.max_text))).numpy()
    given = Policy(model, "tabletop_default", grounding=robovla.GivenGrounding())
    told = given.predict([{**o, "grounding": e} for o, e in zip(observations, estimate)])
    assert np.allclose(pointed.grounding, told.grounding) and np.array_equal(pointed.token_ids, told.token_ids)
    assert np.allclose(pointed.grounding, estimate, atol=1.0 / 255)  # one bin of [-0.5, 0.5]
    # given values win over the pointer; NaN entries are the pointer's ("given" falls back to the recipe's source)
    partial = estimate.copy()
    partial[:, :2] = [[0.1, -0.1], [-0.2, 0.2]]
    partial[:, 2:] = np.nan
    mixed = Policy(model, "tabletop_default", grounding="given").predict(
        [{**o, "grounding": e} for o, e in zip(observations, partial)])
    assert np.allclose(mixed.grounding[:, :2], partial[:, :2], atol=0.003)
    assert np.allclose(mixed.grounding[:, 2:], pointed.grounding[:, 2:])
    # the language model's own grounding tokens when asked: what the model generates by itself
    own = Policy(model, "tabletop_default", grounding="tokens").predict(observations)
    generated = model.generate(inputs, 11).numpy()
    assert np.allclose(own.grounding, processor.decode_grounding(generated[:, :4], "tabletop_default"))
    assert np.array_equal(own.token_ids, model.predict(images, instructions, "tabletop_default",
                                                       [STATE, STATE]).token_ids)


def test_a_pointer_checkpoint_round_trips_and_compiled_inference_keeps_it(tmp_path):
    model = pointer_model()
    observation = {"image": picture(3), "instruction": "push the red cube to the blue square", "proprio": STATE}
    expected = Policy(model, "tabletop_default").predict(observation)
    robovla.save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config[CONFIG_KEY]["layer"] == 1
    loaded = Policy.from_pretrained(tmp_path / "ckpt", "tabletop_default")
    assert isinstance(loaded.model.grounding_pointer, GroundingPointer) and loaded.grounding.name == "pointer"
    again = loaded.predict(observation)
    assert np.allclose(again.grounding, expected.grounding) and np.array_equal(again.token_ids, expected.token_ids)
    compiled = loaded.compile().predict(observation)
    assert np.allclose(compiled.grounding, expected.grounding)


def test_a_bad_pointer_layer_is_refused():
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(grounding=True)
    config.extra[CONFIG_KEY] = {"layer": 7}
    with pytest.raises(RobovlaError, match="layer must name one of the 2"):
        robovla.build_model(config, norm_stats=STATS)
    config.extra[CONFIG_KEY] = {"layer": 0, "colour": 1}
    with pytest.raises(RobovlaError, match="unknown keys"):
        robovla.build_model(config, norm_stats=STATS)


def demos_and_policy(tmp_path, episodes: int, max_frames: int) -> tuple:
    """A small collection (32 px) and a tiny grounding policy without a pointer, saved: what fit-pointer reads."""
    data = tmp_path / "demos"
    assert main(["collect", "--episodes", str(episodes), "--max-frames", str(max_frames), "--out", str(data),
                 "--workers", "1", "--image-size", "32", "--quiet"]) == 0
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True, grounding=True)
    robovla.save_pretrained(robovla.build_model(config, norm_stats=STATS, seed=1), tmp_path / "policy")
    return data, tmp_path / "policy"


def test_fit_pointer_command_writes_a_policy_with_its_pointer(tmp_path, capsys):
    pytest.importorskip("mujoco")
    data, _ = demos_and_policy(tmp_path, episodes=4, max_frames=3)
    out = tmp_path / "with-pointer"
    args = ["fit-pointer", "--checkpoint", str(tmp_path / "policy"), "--datasets", str(data), "--out", str(out),
            "--steps", "4", "--holdout-episodes", "1", "--frame-stride", "2", "--width", "16", "--quiet"]
    assert main(args) == 0
    assert "held-out estimates within 5 cm" in capsys.readouterr().out
    fitted = robovla.load_pretrained(out)
    assert fitted.grounding_pointer is not None and fitted.grounding_pointer.config.layer == 1  # the last layer
    assert fitted.grounding_pointer.patch_xy.abs().sum() > 0  # the camera's table points came along
    report = json.loads((out / "pointer_fit.json").read_text())["report"]
    assert report["frames"] == 8 and report["holdout_frames"] == 2  # frames 0 and 2 of 4 episodes, one held out
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # nothing overwritten
    plain = robovla.preset("tiny")
    robovla.save_pretrained(robovla.build_model(plain, norm_stats=STATS), tmp_path / "plain")
    args[2], args[6] = str(tmp_path / "plain"), str(tmp_path / "other")
    assert main(args) == 2 and "no grounding tokens" in capsys.readouterr().err


def test_fit_pointer_adds_a_corpus_referring_questions(tmp_path, capsys):
    pytest.importorskip("mujoco")
    import pyarrow.parquet as pq

    data, _ = demos_and_policy(tmp_path, episodes=3, max_frames=2)
    corpus = tmp_path / "vl"
    assert main(["collect-vl", "--scenes", "4", "--questions-per-scene", "5", "--image-size", "32", "--out",
                 str(corpus), "--quiet"]) == 0
    referring = json.loads((corpus / "card.json").read_text())["referring"]
    args = ["fit-pointer", "--checkpoint", str(tmp_path / "policy"), "--datasets", str(data), "--out",
            str(tmp_path / "out"), "--steps", "3", "--holdout-episodes", "1", "--frame-stride", "1", "--width", "16",
            "--vl-corpus", str(corpus), "--vl-holdout-scenes", "1", "--instruction-noise", "0.5", "--quiet"]
    assert main(args) == 0
    assert "corpus questions; held-out ones whose thing is placed within 5 cm" in capsys.readouterr().out
    fit = json.loads((tmp_path / "out" / "pointer_fit.json").read_text())
    report = fit["report"]
    assert fit["config"]["instruction_noise"] == 0.5
    assert report["vl_questions"] == referring and 0 <= report["vl_holdout_within"] <= 1
    assert report["frames"] == 6 + referring and report["holdout_frames"] == 2  # robot frames held out as before
    # a corpus written before questions recorded their places: named, and nothing is written
    table = pq.read_table(corpus / "corpus.parquet")
    pq.write_table(table.drop_columns(["x", "y"]), corpus / "corpus.parquet")
    args[6] = str(tmp_path / "again")
    assert main(args) == 2 and "records no positions" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()
    assert main(args[:-2] + ["2", "--quiet"]) == 2  # --instruction-noise 2
    assert "--instruction-noise is a share of the frames" in capsys.readouterr().err


def test_fit_pointer_can_start_from_another_checkpoints_pointer(tmp_path, capsys):
    pytest.importorskip("mujoco")
    from safetensors.torch import load_file

    data, _ = demos_and_policy(tmp_path, episodes=3, max_frames=2)
    args = ["fit-pointer", "--checkpoint", str(tmp_path / "policy"), "--datasets", str(data), "--out",
            str(tmp_path / "first"), "--steps", "3", "--holdout-episodes", "1", "--width", "16", "--quiet"]
    assert main(args) == 0
    # a second fit at learning rate 0 from the first one's pointer keeps its weights: they were its start
    assert main(args[:6] + [str(tmp_path / "second")] + args[7:] + ["--lr", "0", "--init-pointer",
                                                                   str(tmp_path / "first")]) == 0
    first, second = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("first", "second"))
    names = [name for name in first if name.startswith("grounding_pointer.")]
    assert len(names) > 5 and all(torch.equal(first[name], second[name]) for name in names)
    fresh = tmp_path / "fresh"  # the same at learning rate 0 without it: the seed's random start, not the first's
    assert main(args[:6] + [str(fresh)] + args[7:] + ["--lr", "0"]) == 0
    assert not torch.equal(first["grounding_pointer.text_pos"], load_file(str(fresh / "model.safetensors"))[
        "grounding_pointer.text_pos"])
    capsys.readouterr()
    # a checkpoint without a pointer, or one of another width: named before any feature is computed
    for source, extra, message in ((tmp_path / "policy", [], "has no fitted grounding pointer"),
                                   (tmp_path / "first", ["--width", "32"], "width 16 there, 32 here")):
        out = tmp_path / "refused"
        assert main(args[:6] + [str(out)] + args[7:] + extra + ["--init-pointer", str(source)]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_training_from_a_pointer_checkpoint_leaves_the_stale_pointer_out(tmp_path):
    from robovla.train.config import TrainConfig
    from robovla.train.loop import build_base_model

    robovla.save_pretrained(pointer_model(), tmp_path / "ckpt")
    model = build_base_model(TrainConfig(checkpoint=str(tmp_path / "ckpt")), torch.device("cpu"))
    assert model.grounding_pointer is None and CONFIG_KEY not in model.config.extra
    assert robovla.parameter_counts(model).keys() == {"vision_backbone.featurizer", "vision_backbone.fused_featurizer",
                                                      "projector", "language_model", "total"}


def test_server_metadata_says_where_the_grounding_comes_from():
    from robovla.serve.config import ServerConfig
    from robovla.serve.service import build_metadata

    model = pointer_model()
    assert build_metadata(model, ServerConfig(), "m")["grounding"] == "pointer"
    pointer = model.grounding_pointer
    model.set_grounding_pointer(None)  # config.json's key follows the module
    assert build_metadata(model, ServerConfig(), "m")["grounding"] == "tokens" and CONFIG_KEY not in model.config.extra
    model.set_grounding_pointer(pointer)
    assert model.config.extra[CONFIG_KEY]["layer"] == 1


def test_fit_pointer_refuses_a_layer_the_policy_does_not_have(tmp_path):
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True, grounding=True)
    robovla.save_pretrained(robovla.build_model(config, norm_stats=STATS, seed=1), tmp_path / "policy")
    from robovla.train.pointer import fit_pointer

    bad = PointerFitConfig(checkpoint=str(tmp_path / "policy"), datasets=[], out=str(tmp_path / "out"), layer=2)
    with pytest.raises(RobovlaError, match="layer must name one of the 2"):
        fit_pointer(bad, progress=False)
    assert not (tmp_path / "out").exists()


def labelled_frames(count: int = 3) -> tuple[list[dict], list[tuple[int, int]]]:
    """`count` first frames of one dataset, each with its grounding label, and the (dataset, step) rows naming them."""
    rng = np.random.default_rng(0)
    frames = [{"image": picture(k), "instruction": "put the red cube on the blue pad", "proprio": STATE,
               "grounding": rng.uniform(-0.2, 0.2, 4).astype(np.float32), "episode_index": k, "frame_index": 0}
              for k in range(count)]
    return frames, [(0, k) for k in range(count)]


def test_jittered_features_are_seeded_per_frame_and_differ_from_clean_ones():
    """`fit-pointer --augment`: each frame's colours are jittered before its features are cached, the same way on a
    rerun; the labels stay those of the clean frame."""
    from robovla.train.pointer import cache_features

    model = pointer_model()
    frames, rows = labelled_frames()

    def cache(seed):
        return cache_features(model, [frames], rows, "tabletop_default", 1, 16, batch=2, progress=False,
                              jitter_seed=seed)

    clean, jittered, again, other = cache(None), cache(0), cache(0), cache(1)
    assert torch.equal(jittered.patches, again.patches) and torch.equal(jittered.grounding, clean.grounding)
    assert not torch.equal(jittered.patches, clean.patches) and not torch.equal(jittered.patches, other.patches)


def test_instruction_noise_changes_the_cached_prompt_states_not_the_labels():
    """`fit-pointer --instruction-noise`: fillers go into each frame's prompt before its features are cached, the
    same way on a rerun; the labels stay those of the clean frame."""
    from robovla.data.instruction_noise import InstructionNoise
    from robovla.train.pointer import cache_features

    model = pointer_model()
    frames, rows = labelled_frames()

    def cache(noise):
        return cache_features(model, [frames], rows, "tabletop_default", 1, 16, batch=2, progress=False,
                              noise=noise, noise_seed=0)

    clean, noisy, again = cache(None), cache(InstructionNoise(share=1.0)), cache(InstructionNoise(share=1.0))
    assert torch.equal(noisy.text, again.text) and torch.equal(noisy.grounding, clean.grounding)
    assert not torch.equal(noisy.text_mask, clean.text_mask) or not torch.equal(noisy.text, clean.text)
