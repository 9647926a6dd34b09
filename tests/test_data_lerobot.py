"""LeRobot datasets: robovla's writer round trip, hand-made v3.0 and v2.1 folders, statistics, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from robovla.data import (  # noqa: E402
    Episode,
    LeRobotDataset,
    dataset_stats,
    episode_table,
    open_dataset,
    write_dataset_statistics,
    write_lerobot_dataset,
)
from robovla.errors import RobovlaError  # noqa: E402


def make_episodes(n: int = 3, size: int = 16, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [
        Episode(
            f"put the red cube in bowl {i % 2}",
            rng.normal(size=(4 + i, 7)).astype(np.float32),
            rng.normal(size=(4 + i, 7)).astype(np.float32),
            {"front": rng.integers(0, 255, (4 + i, size, size, 3), dtype=np.uint8), "wrist": rng.integers(0, 255, (4 + i, size, size, 3), dtype=np.uint8)},
        )
        for i in range(n)
    ]


def write(path: Path, episodes: list[Episode]) -> Path:
    tables = [episode_table(e, fps=10, index=i) for i, e in enumerate(episodes)]
    return write_lerobot_dataset(path, tables, fps=10, dataset_name="tabletop_default", robot_type="tabletop_default")


def test_round_trip(tmp_path):
    episodes = make_episodes()
    root = write(tmp_path / "ds", episodes)
    for name in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet", "dataset_statistics.json"):
        assert (root / name).is_file(), name
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 15
    assert info["features"]["observation.images.front"]["dtype"] == "image"
    ds = LeRobotDataset(root, chunk_size=3)
    assert len(ds) == 15 and ds.num_episodes == 3 and ds.dataset_name == "tabletop_default"
    item = ds[4 + 1]  # episode 1, frame 1
    assert item["episode_index"] == 1 and item["frame_index"] == 1
    assert item["instruction"] == episodes[1].instruction
    assert np.array_equal(item["image"], episodes[1].images["front"][1])
    assert np.array_equal(item["wrist_image"], episodes[1].images["wrist"][1])
    assert np.allclose(item["action"], episodes[1].action[1]) and item["proprio"].dtype == np.float32
    last = ds[4 + 5 - 1]  # last frame of episode 1: the chunk repeats the last action
    assert last["action_chunk"].shape == (3, 7) and np.allclose(last["action_chunk"], episodes[1].action[-1])
    assert np.allclose(ds[0]["action_chunk"], episodes[0].action[:3])


def test_statistics_formats(tmp_path):
    episodes = make_episodes()
    root = write(tmp_path / "ds", episodes)
    stats = json.loads((root / "dataset_statistics.json").read_text())["tabletop_default"]
    actions = np.concatenate([e.action for e in episodes])
    assert stats["num_transitions"] == 15 and stats["num_trajectories"] == 3
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert np.allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), atol=1e-6)
    assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-6)
    assert set(stats["proprio"]) == {"mean", "std", "max", "min", "q01", "q99"}
    assert dataset_stats(LeRobotDataset(root))["tabletop_default"]["num_transitions"] == 15
    merged = tmp_path / "dataset_statistics.json"
    write_dataset_statistics({"other": {"num_transitions": 1}}, merged)
    write_dataset_statistics(dataset_stats(LeRobotDataset(root)), merged)
    assert set(json.loads(merged.read_text())) == {"other", "tabletop_default"}
    lerobot = json.loads((root / "meta/stats.json").read_text())
    assert lerobot["action"]["count"] == [15] and len(lerobot["observation.state"]["max"]) == 7
    frames = np.concatenate([e.images["front"] for e in episodes]) / 255.0
    assert np.array(lerobot["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert np.allclose(np.array(lerobot["observation.images.front"]["mean"]).reshape(3), frames.mean((0, 1, 2)))


def test_bad_episodes_are_rejected(tmp_path):
    bad = make_episodes(2)
    bad[1].action[2, 3] = np.nan
    with pytest.raises(RobovlaError, match="episode 1: action has NaN/inf at frame 2"):
        write(tmp_path / "nan", bad)
    mixed = make_episodes(1, size=16) + make_episodes(1, size=24)
    with pytest.raises(RobovlaError, match="episode 1: feature shapes"):
        write(tmp_path / "mixed", mixed)


def test_failed_write_keeps_previous_dataset(tmp_path):
    root = write(tmp_path / "ds", make_episodes(2))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    mixed = make_episodes(1, size=16) + make_episodes(1, size=24)
    with pytest.raises(RobovlaError):
        write(root, mixed)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert len(LeRobotDataset(root)) == 9
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no build folder left behind


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_reads_handmade_v3_folder(tmp_path):
    """A v3.0 folder written from the published layout, not by robovla (JPEG bytes, 6-D state, tasks index)."""
    root = tmp_path / "handmade"
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    images = np.zeros((5, 24, 32, 3), np.uint8)
    images[..., 0] = np.arange(5)[:, None, None] * 50
    rows = {
        "observation.images.top": [{"bytes": _jpeg(im), "path": f"frame-{i}.jpg"} for i, im in enumerate(images)],
        "observation.state": [list(np.full(6, i, np.float32)) for i in range(5)],
        "action": [list(np.full(7, i / 10, np.float32)) for i in range(5)],
        "timestamp": np.arange(5, dtype=np.float32) / 30,
        "frame_index": [0, 1, 2, 0, 1],
        "episode_index": [0, 0, 0, 1, 1],
        "index": np.arange(5),
        "task_index": [1, 1, 1, 0, 0],
    }
    pq.write_table(pa.table(rows), root / "data/chunk-000/file-000.parquet")
    pd.DataFrame({"task_index": [0, 1]}, index=["open the drawer", "pick up the cup"]).to_parquet(root / "meta/tasks.parquet")
    pd.DataFrame({"episode_index": [0, 1], "tasks": [["pick up the cup"], ["open the drawer"]], "length": [3, 2]}).to_parquet(
        root / "meta/episodes/chunk-000/file-000.parquet"
    )
    features = {
        "observation.images.top": {"dtype": "image", "shape": [24, 32, 3], "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [6], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": None},
    }
    info = {"codebase_version": "v3.0", "fps": 30, "features": features, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = open_dataset(root, chunk_size=2)
    assert isinstance(ds, LeRobotDataset) and len(ds) == 5 and ds.num_episodes == 2
    assert ds[0]["instruction"] == "pick up the cup" and ds[4]["instruction"] == "open the drawer"
    assert ds[2]["image"].shape == (24, 32, 3) and abs(int(ds[2]["image"][..., 0].mean()) - 100) < 4
    assert ds[4]["proprio"].shape == (6,) and np.allclose(ds[2]["action_chunk"], 0.2)


def test_reads_handmade_v21_folder_with_video(tmp_path):
    """v2.1: one parquet and one MP4 per episode, tasks/episodes as JSON lines."""
    av = pytest.importorskip("av")
    root = tmp_path / "v21"
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta").mkdir()
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30)]
    for ep in range(2):
        n = 4
        video = root / f"videos/chunk-000/observation.images.cam/episode_{ep:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(video), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for t in range(n):
                frame = np.full((32, 32, 3), colors[(t + ep) % 4], np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        table = pa.table(
            {
                "observation.state": [[0.0] * 3] * n,
                "action": [[float(ep)] * 7] * n,
                "timestamp": np.arange(n, dtype=np.float32) / 10,
                "frame_index": np.arange(n),
                "episode_index": [ep] * n,
                "index": np.arange(n) + ep * n,
                "task_index": [0] * n,
            }
        )
        pq.write_table(table, root / f"data/chunk-000/episode_{ep:06d}.parquet")
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "stack the blocks"}) + "\n")
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps({"episode_index": e, "tasks": ["stack the blocks"], "length": 4}) + "\n" for e in range(2)))
    info = {
        "codebase_version": "v2.1",
        "fps": 10,
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {"observation.images.cam": {"dtype": "video", "shape": [32, 32, 3]}, "action": {"dtype": "float32", "shape": [7]}},
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(root)
    assert len(ds) == 8 and ds[5]["instruction"] == "stack the blocks" and ds[5]["action"][0] == 1.0
    for i in (0, 2, 5, 7):
        ep, t = divmod(i, 4)
        assert np.abs(ds[i]["image"].astype(int) - colors[(t + ep) % 4]).mean() < 12


def test_folder_that_is_no_dataset_names_missing_files(tmp_path):
    (tmp_path / "features.json").write_text("{}")
    with pytest.raises(RobovlaError, match=r"missing meta/info.json.*RLDS dataset \(missing dataset_info.json, \*\.tfrecord"):
        open_dataset(tmp_path)


def test_batches_through_a_dataloader(tmp_path):
    import torch

    root = write(tmp_path / "ds", make_episodes())
    batch = next(iter(torch.utils.data.DataLoader(LeRobotDataset(root, chunk_size=4), batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 16, 16, 3) and batch["image"].dtype == torch.uint8
    assert batch["action"].shape == (5, 7) and batch["action_chunk"].shape == (5, 4, 7)
    assert len(batch["instruction"]) == 5 and batch["dataset_name"][0] == "tabletop_default"
