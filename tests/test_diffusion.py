"""Diffusion Policy: the noise schedule, the networks' shapes, overfitting one batch, checkpoints, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from robovla import RobovlaError
from robovla.diffusion import DiffusionConfig, DiffusionInputs, DiffusionPolicy
from robovla.diffusion.networks import ConditionalUnet1D, SpatialSoftmax

TINY = DiffusionConfig(cameras=("image", "wrist_image"), image_size=32, state_dim=3, action_dim=4, horizon=8,
                       n_action_steps=4, resnet_layers=(1, 1, 1, 1), resnet_width=16, keypoints=8, vision_dim=16,
                       vocab_size=50, language_dim=16, down_dims=(32, 64), groups=8, timestep_dim=32,
                       train_steps=50, inference_steps=10)


def batch(size: int = 4, seed: int = 0) -> tuple[DiffusionInputs, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {camera: torch.rand(size, 3, 32, 32, generator=g) for camera in TINY.cameras}
    ids = torch.randint(1, 50, (size, 6), generator=g)
    mask = torch.ones(size, 6, dtype=torch.long)
    mask[0, 4:] = 0  # a shorter instruction, padded
    state = torch.rand(size, 3, generator=g) * 2 - 1
    actions = torch.rand(size, TINY.horizon, TINY.action_dim, generator=g) * 2 - 1
    return DiffusionInputs(images, ids, mask, state), actions


def test_the_noise_schedule_round_trips():
    """Noise added at any level is recovered exactly from the noisy sample and the true noise (DDPM's algebra),
    and DDIM's 10 steps end at the clean sample when told the true noise."""
    policy = DiffusionPolicy(TINY)
    scheduler = policy.noise_scheduler
    clean = torch.rand(3, 8, 4) * 2 - 1
    noise = torch.randn_like(clean)
    for level in (0, 17, 49):
        t = torch.full((3,), level)
        noisy = scheduler.add_noise(clean, noise, t)
        alpha = scheduler.alphas_cumprod[level]
        recovered = (noisy - (1 - alpha).sqrt() * noise) / alpha.sqrt()
        torch.testing.assert_close(recovered, clean, atol=1e-3, rtol=1e-3)  # float32; the last level divides by ~0.02
    sampler = policy.sampler
    sampler.set_timesteps(10)
    assert len(sampler.timesteps) == 10 and sampler.timesteps[0] > sampler.timesteps[-1]
    x = scheduler.add_noise(clean, noise, torch.full((3,), int(sampler.timesteps[0])))
    for level in sampler.timesteps:
        x = sampler.step(noise, level, x).prev_sample
    torch.testing.assert_close(x, clean, atol=1e-4, rtol=1e-4)


def test_shapes_and_keypoints():
    unet = ConditionalUnet1D(action_dim=4, condition_dim=10, down_dims=(32, 64, 128), kernel_size=5, groups=8,
                             timestep_dim=32)
    out = unet(torch.randn(2, 16, 4), torch.tensor([0, 9]), torch.randn(2, 10))
    assert out.shape == (2, 16, 4)
    softmax = SpatialSoftmax(channels=4, keypoints=3)
    features = torch.zeros(1, 4, 5, 7)
    softmax.project.weight.data.zero_()
    softmax.project.bias.data.zero_()  # flat maps: every keypoint at the image centre
    torch.testing.assert_close(softmax(features), torch.zeros(1, 6))
    policy = DiffusionPolicy(TINY)
    inputs, _ = batch()
    assert policy.condition(inputs).shape == (4, TINY.condition_dim)
    assert policy.sample(inputs, torch.Generator().manual_seed(0)).shape == (4, 8, 4)


@pytest.mark.slow  # ~45 s on 2 cores
def test_one_batch_overfits():
    """Denoising loss on one fixed batch falls by 10x (the networks, the schedule and the gradients fit). The
    loss at low noise levels falls slowly (the noise must be read off a tiny perturbation): 700 steps give ~14x."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(replace(TINY, down_dims=(64, 128)))
    inputs, actions = batch()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)

    def mean_loss() -> float:
        with torch.no_grad():
            fixed = torch.Generator().manual_seed(7)
            return sum(policy.loss(inputs, actions, fixed).item() for _ in range(8)) / 8

    first = mean_loss()
    for _ in range(700):
        optimizer.zero_grad()
        policy.loss(inputs, actions, g).backward()
        optimizer.step()
    assert mean_loss() < first / 10


def test_save_and_load_give_the_same_actions_for_the_same_noise(tmp_path):
    policy = DiffusionPolicy(TINY, norm_stats={"toy": {"action": {"q01": [-1] * 4, "q99": [1] * 4}}}).eval()
    inputs, _ = batch(2)
    before = policy.sample(inputs, torch.Generator().manual_seed(3))
    folder = policy.save(tmp_path / "dp")
    assert json.loads((folder / "config.json").read_text())["policy_type"] == "diffusion"
    loaded = DiffusionPolicy.load(folder)
    assert loaded.config == TINY and loaded.norm_stats == policy.norm_stats
    torch.testing.assert_close(loaded.sample(inputs, torch.Generator().manual_seed(3)), before)
    assert not torch.equal(loaded.sample(inputs, torch.Generator().manual_seed(4)), before)


def test_bad_configs_and_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(RobovlaError, match="multiple of 4"):
        DiffusionConfig(horizon=10)
    with pytest.raises(RobovlaError, match="n_action_steps \\(20\\) exceeds the horizon"):
        DiffusionConfig(n_action_steps=20)
    with pytest.raises(RobovlaError, match="not a diffusion policy"):
        DiffusionConfig.from_dict({"model_type": "openvla"})
    with pytest.raises(RobovlaError, match="unknown fields colour"):
        DiffusionConfig.from_dict({**TINY.to_dict(), "colour": "red"})
    policy = DiffusionPolicy(TINY)
    inputs, actions = batch()
    with pytest.raises(RobovlaError, match="no image for camera\\(s\\) wrist_image"):
        policy.condition(DiffusionInputs({"image": inputs.images["image"]}, inputs.language_ids,
                                         inputs.language_mask, inputs.state))
    with pytest.raises(RobovlaError, match="state of length 3, got 5"):
        policy.condition(DiffusionInputs(inputs.images, inputs.language_ids, inputs.language_mask,
                                         torch.zeros(4, 5)))
    with pytest.raises(RobovlaError, match="action targets are \\[6, 4\\]"):
        policy.loss(inputs, actions[:, :6])
    folder = policy.save(tmp_path / "dp")
    import robovla

    with pytest.raises(RobovlaError, match="holds a Diffusion Policy, not a VLA"):
        robovla.load_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "action_dim": 5}))
    with pytest.raises(RobovlaError, match="has shape"):
        DiffusionPolicy.load(folder)


def test_the_ema_follows_the_weights_with_a_warming_decay():
    from robovla.diffusion.model import exponential_moving_average

    policy = DiffusionPolicy(TINY)
    ema = exponential_moving_average(policy)
    start = [p.detach().clone() for p in policy.parameters()]
    ema.step(policy.parameters())  # the first step copies (decay 0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    for _ in range(2):
        ema.step(policy.parameters())
    assert 0 < ema.cur_decay_value < TINY.ema_decay  # still warming up
    averaged = DiffusionPolicy(TINY)
    ema.copy_to(averaged.parameters())
    moved = [(a - s).mean().item() for a, s in zip(averaged.parameters(), start)]
    assert all(0.0 < m < 1.0 for m in moved)  # between the old weights and the new ones


def test_the_processor_turns_observations_into_inputs_and_chunks_into_actions():
    import numpy as np

    from robovla.diffusion.processor import DiffusionProcessor
    from robovla.model.factory import packaged_tokenizer_path
    from robovla.processing import TextTokenizer

    tokenizer = TextTokenizer(packaged_tokenizer_path("tabletop-small"))
    config = replace(TINY, vocab_size=len(tokenizer))
    stats = {"toy": {"action": {"q01": [-2.0, 0.0, 1.0, 0.0], "q99": [2.0, 4.0, 3.0, 1.0],
                                "mask": [True, True, True, False]},
                     "proprio": {"q01": [0.0, 0.0, 0.0], "q99": [1.0, 2.0, 4.0]}}}
    processor = DiffusionProcessor(config, tokenizer, stats)
    rng = np.random.default_rng(0)
    observations = [{"image": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                     "wrist_image": rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
                     "instruction": text, "proprio": [0.5, 1.0, 2.0]}
                    for text in ("Pick up the red block", "put the green cube in the blue bowl")]
    inputs = processor.inputs(observations)
    assert inputs.images["wrist_image"].shape == (2, 3, 32, 32) and 0 <= inputs.images["image"].min() <= 1
    lengths = [len(tokenizer.encode(o["instruction"].lower())) for o in observations]
    assert inputs.language_mask.sum(dim=1).tolist() == lengths and lengths[0] != lengths[1]
    assert inputs.language_ids.shape[1] == max(lengths) and (inputs.language_ids[inputs.language_mask == 0] == 0).all()
    torch.testing.assert_close(inputs.state, torch.zeros(2, 3))  # the middle of every range
    assert DiffusionPolicy(config).condition(inputs).shape == (2, config.condition_dim)
    raw = np.array([[[1.0, 2.0, 2.5, 1.0]] * 8])
    np.testing.assert_allclose(processor.actions(processor.targets(raw)), raw, atol=1e-6)  # the gripper raw
    with pytest.raises(RobovlaError, match="has no 'wrist_image'"):
        processor.inputs([{k: v for k, v in observations[0].items() if k != "wrist_image"}])
    with pytest.raises(RobovlaError, match="proprio has 2 numbers, this policy reads 3"):
        processor.inputs([{**observations[0], "proprio": [0.0, 1.0]}])
    with pytest.raises(RobovlaError, match="language embedding 50"):
        DiffusionProcessor(TINY, tokenizer, stats)


def test_training_batches_come_from_the_shared_data_pipeline(tmp_path):
    """The VLA's seeded, resumable data pipeline feeds a Diffusion Policy: chunks of its horizon, normalized with
    the datasets' statistics, and a few steps on them lower the loss."""
    from test_train import make_dataset

    from robovla.diffusion.processor import DiffusionProcessor
    from robovla.model.factory import packaged_tokenizer_path
    from robovla.processing import TextTokenizer
    from robovla.train.config import TrainConfig
    from robovla.train.data import TrainingData

    folder = make_dataset(tmp_path / "synthetic", size=64)
    tokenizer = TextTokenizer(packaged_tokenizer_path("tabletop-small"))
    config = replace(TINY, cameras=("image",), state_dim=7, action_dim=7, vocab_size=len(tokenizer))
    processor = DiffusionProcessor(config, tokenizer, {})
    data = TrainingData.open(TrainConfig(datasets=[str(folder)], out=str(tmp_path / "run"), seed=3), processor)
    processor.norm_stats = data.statistics()
    steps = data.steps(0, batch_size=4, micro_offsets=[0], per_rank=4)
    [batch], _ = next(steps)
    assert batch["actions"].shape == (4, 8, 7) and batch["actions"].abs().max() <= 1.0
    assert batch["inputs"].images["image"].shape == (4, 3, 32, 32) and batch["inputs"].state.shape == (4, 7)
    again = TrainingData.open(TrainConfig(datasets=[str(folder)], out=str(tmp_path / "run"), seed=3), processor)
    [same], _ = next(again.steps(0, batch_size=4, micro_offsets=[0], per_rank=4))
    torch.testing.assert_close(same["actions"], batch["actions"])  # seeded: a rerun draws the same batch
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    fixed = lambda: policy.loss(batch["inputs"], batch["actions"], torch.Generator().manual_seed(5)).item()  # noqa: E731
    first = fixed()
    for _ in range(15):
        optimizer.zero_grad()
        policy.loss(batch["inputs"], batch["actions"]).backward()
        optimizer.step()
    assert fixed() < first
