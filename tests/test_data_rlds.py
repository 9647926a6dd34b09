"""RLDS / Open X-Embodiment: a TFDS-layout folder built here, read without TensorFlow, standardized."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tfrecord")
from PIL import Image  # noqa: E402
from tfrecord.writer import TFRecordWriter  # noqa: E402

from robovla.data import RLDSDataset, open_dataset  # noqa: E402
from robovla.data.oxe import binarize_gripper, rel2abs_gripper  # noqa: E402

TENSOR = "tensorflow_datasets.core.features.tensor_feature.Tensor"


def tensor(*shape: int, dtype: str = "float32") -> dict:
    return {"pythonClassName": TENSOR, "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": "none"}}


def fdict(**features) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict", "featuresDict": {"features": features}}


def image(h: int, w: int) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image", "image": {"shape": {"dimensions": [str(h), str(w), "3"]}, "dtype": "uint8", "encodingFormat": "png"}}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_rt1_style_folder(root: Path, episodes: list[int]) -> list[dict]:
    """An RT-1 (fractal) shaped RLDS folder: nested action dict, relative gripper, instruction in the observation."""
    root.mkdir(parents=True)
    steps = fdict(
        action=fdict(world_vector=tensor(3), rotation_delta=tensor(3), gripper_closedness_action=tensor(1)),
        observation=fdict(
            image=image(8, 10),
            base_pose_tool_reached=tensor(7),
            gripper_closed=tensor(1),
            natural_language_instruction={"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}},
        ),
        is_first=tensor(dtype="bool"),
        is_last=tensor(dtype="bool"),
    )
    features = fdict(steps={"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset", "sequence": {"feature": steps, "length": "-1"}})
    (root / "features.json").write_text(json.dumps(features))
    (root / "dataset_info.json").write_text(json.dumps({"name": "fractal20220817_data", "version": "0.1.0", "splits": [{"name": "train", "shardLengths": [str(len(episodes))]}]}))
    writer = TFRecordWriter(str(root / "fractal20220817_data-train.tfrecord-00000-of-00001"))
    rng = np.random.default_rng(0)
    truth = []
    for ep, n in enumerate(episodes):
        wv, rot = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
        gripper = np.zeros(n, np.float32)
        gripper[1] = 1.0  # close at step 1 ...
        gripper[n - 1] = -1.0  # ... open at the last step
        frames = [np.full((8, 10, 3), 10 * ep + t, np.uint8) for t in range(n)]
        instruction = f"pick object {ep}"
        writer.write(
            {
                "steps/action/world_vector": (wv.reshape(-1).tolist(), "float"),
                "steps/action/rotation_delta": (rot.reshape(-1).tolist(), "float"),
                "steps/action/gripper_closedness_action": (gripper.tolist(), "float"),
                "steps/observation/image": ([png(f) for f in frames], "byte"),
                "steps/observation/base_pose_tool_reached": (np.arange(n * 7, dtype=np.float32).tolist(), "float"),
                "steps/observation/gripper_closed": ([0.0] * n, "float"),
                "steps/observation/natural_language_instruction": ([instruction.encode()] * n, "byte"),
                "steps/is_first": ([1] + [0] * (n - 1), "int"),
                "steps/is_last": ([0] * (n - 1) + [1], "int"),
            }
        )
        truth.append({"world_vector": wv, "rotation_delta": rot, "frames": frames, "instruction": instruction})
    writer.close()
    return truth


def test_reads_and_standardizes_rt1_style_rlds(tmp_path):
    truth = build_rt1_style_folder(tmp_path / "fractal", [5, 3])
    ds = open_dataset(tmp_path / "fractal", chunk_size=4)
    assert isinstance(ds, RLDSDataset) and ds.dataset_name == "fractal20220817_data"
    assert len(ds) == 8 and ds.num_episodes == 2
    item = ds[2]
    assert item["instruction"] == "pick object 0"
    assert np.allclose(item["action"][:3], truth[0]["world_vector"][2]) and np.allclose(item["action"][3:6], truth[0]["rotation_delta"][2])
    assert np.array_equal(item["image"], truth[0]["frames"][2])
    # relative gripper (+1 close at step 1, -1 open at the end) becomes absolute with 1 = open
    assert ds.actions[:5, 6].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert item["proprio"].shape == (8,) and ds[7]["action_chunk"].shape == (4, 7)
    assert ds[6]["instruction"] == "pick object 1" and np.array_equal(ds[6]["image"], truth[1]["frames"][1])


def test_gripper_conversions_match_the_reference():
    assert rel2abs_gripper(np.array([0, 0, 1, 0, 0, -1, 0])).tolist() == [1, 1, 0, 0, 0, 1, 1]
    assert rel2abs_gripper(np.array([0, -1, 0])).tolist() == [0, 1, 1]  # opens first, so it started closed
    assert rel2abs_gripper(np.zeros(3)).tolist() == [1, 1, 1]
    assert binarize_gripper(np.array([1.0, 0.5, 0.02, 0.6, 0.99])).tolist() == [1, 0, 0, 1, 1]
