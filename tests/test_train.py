"""Training: strategies, overfitting, resume, LoRA merge, bad input; DDP/FSDP2 agreement in test_train_distributed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import robovla
from robovla.train import TrainConfig, Trainer, train
from robovla.train.strategies import apply_strategy

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 230)}


def make_dataset(folder: Path, name: str = "synthetic", episodes: int = 6, frames: int = 8, action_dim: int = 7,
                 size: int = 128, grounding: bool = False) -> Path:
    """A LeRobot v3 dataset whose actions depend on the image and the instruction (learnable, not random)."""
    from robovla.data import Episode, episode_table, write_lerobot_dataset

    rng = np.random.default_rng(0)
    tables = []
    for e in range(episodes):
        color = list(COLORS)[e % 3]
        images = np.full((frames, size, size, 3), 180, np.uint8)
        actions = np.zeros((frames, action_dim), np.float32)
        for t in range(frames):
            x = int(rng.integers(8, size - 40))
            images[t, 20:52, x : x + 32] = COLORS[color]
            actions[t, 0] = (x - size / 2) / size
            actions[t, 1] = 0.3 * (e % 3) - 0.3
            actions[t, -1] = float(t < frames // 2)
        episode = Episode(f"pick up the {color} cube", actions, rng.normal(size=(frames, 7)).astype(np.float32),
                          {"image": images}, grounding=actions[:, :2].copy() if grounding else None)
        tables.append(episode_table(episode, fps=10.0, index=e))
    return write_lerobot_dataset(folder, tables, fps=10.0, dataset_name=name, robot_type="synthetic")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "synthetic")


def config(dataset: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(datasets=[str(dataset)], out=str(out), steps=4, batch_size=4, lr=1e-3, precision="fp32",
                  save_every=0, progress=False, log_every=1, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


# -------------------------------------------------------------------------------------------------- strategies
def trainable_prefixes(strategy: str) -> set[str]:
    model = robovla.build_model("tiny")
    wrapped, report = apply_strategy(model, TrainConfig(strategy=strategy, lora_rank=4))
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert report.trainable == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return set(names)


def groups(names: set[str]) -> set[str]:
    out = set()
    for n in names:
        if n.startswith("language_model.model.layers."):
            out.add("llm.layer" + n.split(".")[3])
        elif n.startswith("language_model.model.embed_tokens"):
            out.add("llm.embed")
        elif n.startswith("language_model.lm_head"):
            out.add("llm.head")
        elif n.startswith("language_model.model.norm"):
            out.add("llm.norm")
        else:
            out.add(".".join(n.split(".")[:2]))
    return out


VISION = {"vision_backbone.featurizer", "vision_backbone.fused_featurizer"}
LAST = {"llm.embed", "llm.layer1", "llm.head"}


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("full", VISION | {"projector.fc1", "projector.fc2", "projector.fc3", "llm.embed", "llm.layer0", "llm.layer1",
                           "llm.norm", "llm.head"}),
        ("frozen-vision", {"projector.fc1", "projector.fc2", "projector.fc3", "llm.embed", "llm.layer0", "llm.layer1",
                           "llm.norm", "llm.head"}),
        ("sandwich", VISION | {"projector.fc1", "projector.fc2", "projector.fc3"} | LAST),
        ("last-layer", LAST),
    ],
)
def test_strategy_freezes_exactly_what_it_should(strategy, expected):
    names = trainable_prefixes(strategy)
    assert groups(names) == expected
    # modules the forward never runs stay frozen in every strategy
    unused = ("vision_backbone.featurizer.blocks.2.", "vision_backbone.featurizer.norm.",
              "vision_backbone.fused_featurizer.blocks.3.", "vision_backbone.fused_featurizer.norm.",
              "vision_backbone.fused_featurizer.attn_pool.")
    assert not any(n.startswith(marker) for n in names for marker in unused)


def test_lora_trains_only_adapters():
    names = trainable_prefixes("lora")
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert any("language_model" in n for n in names) and any("vision_backbone" in n for n in names)


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(robovla.RobovlaError, match="full, frozen-vision, sandwich, last-layer, lora, qlora"):
        TrainConfig(strategy="everything")


def test_qlora_on_cpu_says_why(dataset, tmp_path):
    with pytest.raises(robovla.RobovlaError, match="qlora needs a CUDA GPU"):
        Trainer(config(dataset, tmp_path / "run", strategy="qlora"))


# ------------------------------------------------------------------------------------------------- training
def test_loss_decreases_when_overfitting(dataset, tmp_path):
    summary = train(config(dataset, tmp_path / "run", steps=30, batch_size=8, augment=False))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    assert summary.final_action_accuracy > 0.5
    checkpoint = Path(summary.checkpoint)
    model = robovla.load_pretrained(checkpoint)
    assert "synthetic" in model.norm_stats
    assert json.loads((checkpoint / "training_config.json").read_text())["steps"] == 30


def test_resume_after_kill_equals_uninterrupted(dataset, tmp_path):
    full = train(config(dataset, tmp_path / "a", steps=6, save_every=3))
    killed = Trainer(config(dataset, tmp_path / "b", steps=6, save_every=3))
    for _ in range(3):
        killed.train_step()
    killed.save()
    killed.train_step()  # progress after the last checkpoint is lost when the process dies
    del killed
    resumed = train(config(dataset, tmp_path / "b", steps=6, save_every=3, resume=True))
    a = load_file(str(Path(full.checkpoint) / "model.safetensors"))
    b = load_file(str(Path(resumed.checkpoint) / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert full.final_loss == resumed.final_loss


def test_loader_workers_train_the_same_weights_and_resume_exactly(dataset, tmp_path):
    inline = train(config(dataset, tmp_path / "a", steps=6, save_every=3))
    killed = Trainer(config(dataset, tmp_path / "b", steps=6, save_every=3, loader_workers=2))
    for _ in range(3):
        killed.train_step()  # the workers have drawn batches beyond step 3 by now
    killed.save()
    killed.train_step()
    del killed
    resumed = train(config(dataset, tmp_path / "b", steps=6, save_every=3, loader_workers=2, resume=True))
    a = load_file(str(Path(inline.checkpoint) / "model.safetensors"))
    b = load_file(str(Path(resumed.checkpoint) / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_stop_at_then_resume_equals_uninterrupted(dataset, tmp_path):
    full = train(config(dataset, tmp_path / "a", steps=5, save_every=0))
    first = train(config(dataset, tmp_path / "b", steps=5, save_every=0, stop_at=2))
    assert first.steps == 2 and Path(first.checkpoint).name == "step-000002"
    rest = train(config(dataset, tmp_path / "b", steps=5, save_every=0, resume=True))
    a = load_file(str(Path(full.checkpoint) / "model.safetensors"))
    b = load_file(str(Path(rest.checkpoint) / "model.safetensors"))
    assert rest.steps == 5 and all(torch.equal(a[name], b[name]) for name in a)


def test_resume_with_different_config_names_the_keys(dataset, tmp_path):
    train(config(dataset, tmp_path / "run", steps=2))
    with pytest.raises(robovla.RobovlaError, match=r"lr \(0.001 -> 0.01\)"):
        Trainer(config(dataset, tmp_path / "run", steps=2, lr=1e-2, resume=True))
    with pytest.raises(robovla.RobovlaError, match="already holds checkpoints"):
        Trainer(config(dataset, tmp_path / "run", steps=2))


def test_lora_merge_matches_adapter_model(dataset, tmp_path):
    base = train(config(dataset, tmp_path / "base", steps=2))
    trainer = Trainer(config(dataset, tmp_path / "lora", checkpoint=base.checkpoint, preset=None,
                             strategy="lora", lora_rank=4, lr=5e-3, steps=3))
    trainer.run()
    merged = robovla.load_pretrained(Path(trainer.out) / "checkpoints" / "step-000003")
    images = [np.full((128, 128, 3), v, np.uint8) for v in (40, 120, 200)]
    texts = ["pick up the red cube", "pick up the green cube", "pick up the blue cube"]
    states = [np.full(7, v) for v in (-0.5, 0.0, 0.5)]  # the preset reads the robot state
    adapter_model = trainer.vla.eval()  # the peft-wrapped modules live inside it
    with torch.no_grad():
        unmerged = adapter_model.predict(images, texts, "synthetic", proprio=states)
    assert (Path(trainer.out) / "checkpoints" / "step-000003" / "adapter" / "adapter_model.safetensors").exists()
    lora_delta = sum(p.abs().sum().item() for n, p in trainer.inner.named_parameters() if "lora_B" in n)
    assert lora_delta > 0  # the adapters really changed something
    assert merged.predict(images, texts, "synthetic", proprio=states).token_ids.tolist() == unmerged.token_ids.tolist()


# ------------------------------------------------------------------------------------------------ bad input
def test_action_dimension_mismatch_names_both(dataset, tmp_path):
    base = train(config(dataset, tmp_path / "base", steps=1))
    other = make_dataset(tmp_path / "six", name="six_dof", action_dim=6, episodes=2)
    with pytest.raises(robovla.RobovlaError, match="'six_dof' has 6-dimensional actions but the model predicts 7"):
        Trainer(config(other, tmp_path / "ft", checkpoint=base.checkpoint, preset=None))


def test_nan_loss_stops_with_step_and_saves_nothing(dataset, tmp_path):
    trainer = Trainer(config(dataset, tmp_path / "run", steps=3, save_every=1))
    trainer.vla.projector.fc1.weight.data[0, 0] = float("nan")  # fault injection
    with pytest.raises(robovla.RobovlaError, match="at step 1: stopping, nothing saved"):
        trainer.run()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_failed_save_keeps_previous_checkpoint(dataset, tmp_path, monkeypatch):
    trainer = Trainer(config(dataset, tmp_path / "run", steps=4, save_every=2))
    trainer.train_step()
    trainer.train_step()
    good = trainer.save()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("robovla.train.loop.write_training_state", disk_full)
    trainer.train_step()
    with pytest.raises(OSError, match="No space left"):
        trainer.save()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [good.name]
    robovla.load_pretrained(good)


def test_cli_help_lists_every_option(capsys):
    from robovla.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text


def test_config_file_and_flags(tmp_path, dataset):
    import argparse

    from robovla.train.config import add_arguments, config_from_args

    file = tmp_path / "c.json"
    file.write_text(json.dumps({"steps": 9, "lr": 0.5, "datasets": [str(dataset)]}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--config", str(file), "--lr", "0.1", "--no-augment"]))
    assert (cfg.steps, cfg.lr, cfg.augment, cfg.datasets) == (9, 0.1, False, [str(dataset)])


def test_proprio_can_be_switched_off_and_added_when_fine_tuning(dataset, tmp_path):
    from robovla.errors import RobovlaError

    image = np.full((128, 128, 3), 180, np.uint8)
    plain = Path(train(config(dataset, tmp_path / "plain", steps=2, proprio=False)).checkpoint)
    model = robovla.load_pretrained(plain)
    assert not model.recipe.proprio
    model.predict_action(image, "pick up the red cube")  # the image-only model needs no state
    tuned = Path(train(config(dataset, tmp_path / "tuned", steps=2, checkpoint=str(plain), proprio=True)).checkpoint)
    model = robovla.load_pretrained(tuned)
    assert model.recipe.proprio
    with pytest.raises(RobovlaError, match="pass proprio"):
        model.predict_action(image, "pick up the red cube")
    assert model.predict_action(image, "pick up the red cube", proprio=np.zeros(7)).shape == (7,)


def test_grounding_run_reports_its_tokens_and_needs_labels(dataset, tmp_path):
    from robovla.errors import RobovlaError

    labelled = make_dataset(tmp_path / "labelled", grounding=True)
    summary = train(config(labelled, tmp_path / "run", steps=2, grounding=True))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"grounding_accuracy", "grounding_l1"} <= set(records[-2])
    model = robovla.load_pretrained(Path(summary.checkpoint))
    assert model.recipe.grounding and len(model.norm_stats["synthetic"]["grounding"]["q01"]) == 2
    prediction = model.predict([np.full((128, 128, 3), 180, np.uint8)], ["pick up the red cube"],
                               proprio=[np.zeros(7)])
    assert prediction.grounding.shape == (1, 2) and prediction.actions.shape == (1, 1, 7)
    with pytest.raises(RobovlaError, match="no grounding labels"):
        train(config(dataset, tmp_path / "unlabelled", steps=1, grounding=True))


def test_folders_of_one_robot_pool_into_one_dataset(dataset, tmp_path):
    from robovla.data import open_dataset
    from robovla.data.steps import PooledSteps
    from robovla.errors import RobovlaError
    from robovla.train.data import TrainingData

    extra = make_dataset(tmp_path / "extra", episodes=3, frames=5)  # also named "synthetic"
    model = robovla.build_model("tiny", seed=0)
    data = TrainingData.open(config(dataset, tmp_path / "run", datasets=[str(dataset), str(extra)]), model.processor)
    pooled = data.datasets["synthetic"]
    assert isinstance(pooled, PooledSteps) and len(pooled) == 6 * 8 + 3 * 5 and pooled.num_episodes == 9
    base = open_dataset(dataset)
    assert np.array_equal(pooled[len(base)]["action"], open_dataset(extra)[0]["action"])
    stats = data.statistics()["synthetic"]
    assert stats["num_transitions"] == 63 and np.isclose(stats["action"]["max"][0], pooled.actions[:, 0].max())
    other = make_dataset(tmp_path / "wide", episodes=1, frames=3, action_dim=6)
    with pytest.raises(RobovlaError, match="disagree on the actions width"):
        PooledSteps([base, open_dataset(other)])


def test_grounding_loss_weight_counts_each_grounding_token_that_many_times(tmp_path):
    import torch.nn.functional as F

    from robovla.errors import RobovlaError

    labelled = make_dataset(tmp_path / "labelled", grounding=True)
    trainer = Trainer(config(labelled, tmp_path / "run", grounding=True, grounding_loss_weight=4.0))
    batch = trainer.data.batch(trainer.data.draw(4), 0, 0)
    out = trainer.model(**batch, full_logits=False)
    per_token = F.cross_entropy(out.logits.float(), out.labels, reduction="none").view(4, -1)
    grounding, rest = per_token[:, :2], per_token[:, 2:]  # 2 grounding tokens, then 7 action tokens and EOS
    expected = (4.0 * grounding.sum() + rest.sum()) / (4.0 * grounding.numel() + rest.numel())
    torch.testing.assert_close(trainer._weighted_loss(out, rows=4), expected)
    trainer.config.grounding_loss_weight = 1.0
    assert trainer._weighted_loss(out, rows=4) is out.loss
    with pytest.raises(RobovlaError, match="grounding_loss_weight must be > 0"):
        config(labelled, tmp_path / "bad", grounding_loss_weight=0.0)


def test_max_episodes_keeps_the_first_demonstrations_and_refuses_too_few(dataset, tmp_path):
    """Data-efficiency studies: the first N episodes of a folder, each smaller set inside the larger, with the
    statistics of what is kept; asking for more than the folder has names both numbers."""
    from robovla.train.data import TrainingData

    processor = robovla.build_model("tabletop-cpu", seed=0).processor
    full = TrainingData.open(TrainConfig(datasets=[str(dataset)], out=str(tmp_path)), processor)
    two = TrainingData.open(TrainConfig(datasets=[str(dataset)], out=str(tmp_path), max_episodes=2), processor)
    (subset,), (whole,) = two.datasets.values(), full.datasets.values()
    assert subset.num_episodes == 2 and len(subset) == 16 and whole.num_episodes == 6
    np.testing.assert_array_equal(subset.actions, whole.actions[:16])
    assert subset[3]["instruction"] == whole[3]["instruction"]
    assert two.statistics()["synthetic"]["num_trajectories"] == 2
    with pytest.raises(robovla.RobovlaError, match=r"has 6 demonstrations, fewer than the 7 requested"):
        TrainingData.open(TrainConfig(datasets=[str(dataset)], out=str(tmp_path), max_episodes=7), processor)


def test_augment_crop_switch_reaches_the_training_batches(dataset, tmp_path):
    from robovla.train.data import TrainingData

    processor = robovla.build_model("tiny", seed=0).processor
    crop = TrainingData.open(config(dataset, tmp_path / "a"), processor).augment
    jitter = TrainingData.open(config(dataset, tmp_path / "b", augment_crop=False), processor).augment
    none = TrainingData.open(config(dataset, tmp_path / "c", augment=False, augment_crop=False), processor).augment
    assert crop.config.crop_area == 0.9 and jitter.config.crop_area == 1.0 and none is None


def test_instruction_noise_reaches_the_training_prompts_and_leaves_the_images_alone(dataset, tmp_path):
    """`--instruction-noise`: the batch rows' prompts carry fillers, seeded by (seed, step, position); the images
    are those of a run without it."""
    plain = Trainer(config(dataset, tmp_path / "a", augment_crop=False)).data
    noisy = Trainer(config(dataset, tmp_path / "b", augment_crop=False, instruction_noise=1.0)).data
    samples = plain.draw(4)
    a, b = plain.batch(samples, 3, 0), noisy.batch(samples, 3, 0)
    assert plain.noise is None and noisy.noise.share == 1.0
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    def lengths(batch):
        mask = batch.get("attention_mask")
        return mask.sum(1) if mask is not None else torch.full((len(batch["input_ids"]),), batch["input_ids"].shape[1])

    assert (lengths(b) > lengths(a)).all()  # every prompt grew
    assert torch.equal(noisy.batch(samples, 3, 0)["input_ids"], b["input_ids"])
    with pytest.raises(robovla.RobovlaError, match="instruction_noise"):
        config(dataset, tmp_path / "c", instruction_noise=1.5)
