"""Write episodes as a LeRobotDataset v3.0 folder, atomically.

Layout: meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-000/file-000.parquet,
data/chunk-000/file-000.parquet (images as PNG bytes in `{bytes, path}` structs, like LeRobot's image
features), plus the reference's dataset_statistics.json. The folder is built beside the target and renamed
into place, so an interrupted write leaves the previous dataset as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from robovla.data.episodes import GROUNDING_KEY, Episode
from robovla.data.stats import compute_stats, image_stats, lerobot_stats, save_json
from robovla.errors import RobovlaError
from robovla.robots.tabletop import ACTION_NAMES, STATE_NAMES

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
SHAPES_KEY = b"robovla.feature_shapes"


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def episode_table(episode: Episode, fps: float, index: int = 0) -> pa.Table:
    """One episode's frame rows (without the dataset-wide indices); validates the episode first."""
    episode.validate(index)
    n = len(episode)
    columns: dict[str, pa.Array] = {}
    for key, frames in episode.images.items():
        columns[f"observation.images.{key}"] = pa.array(
            [{"bytes": encode_png(f), "path": None} for f in frames], pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        )
    vectors = [("observation.state", episode.proprio), ("action", episode.action)]
    if episode.grounding is not None:
        vectors.append((GROUNDING_KEY, episode.grounding))
    for key, values in vectors:
        flat = pa.array(np.asarray(values, np.float32).reshape(-1))
        columns[key] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    columns["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / np.float32(fps))
    columns["frame_index"] = pa.array(np.arange(n, dtype=np.int64))
    table = pa.table(columns)
    shapes = {k: list(v) for k, v in episode.feature_shapes().items()}
    meta = {SHAPES_KEY: json.dumps(shapes).encode(), b"robovla.instruction": episode.instruction.encode()}
    return table.replace_schema_metadata(meta)


def table_instruction(table: pa.Table) -> str:
    return table.schema.metadata[b"robovla.instruction"].decode()


def _features(shapes: dict[str, list[int]]) -> dict[str, dict]:
    features: dict[str, dict] = {}
    for key, shape in shapes.items():
        if key.startswith("observation.images."):
            features[key] = {"dtype": "image", "shape": shape, "names": ["height", "width", "channels"]}
        else:
            names = list(STATE_NAMES) if key == "observation.state" and shape == [7] else \
                list(ACTION_NAMES) if shape == [7] else None  # the tabletop robot's layout (robovla.robots)
            features[key] = {"dtype": "float32", "shape": shape, "names": names}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def write_lerobot_dataset(
    out_dir: str | Path,
    tables: list[pa.Table],
    *,
    fps: float,
    dataset_name: str,
    robot_type: str,
    extra_info: dict | None = None,
) -> Path:
    """Assemble per-episode tables (from `episode_table`) into a v3.0 dataset at `out_dir`, atomically."""
    if not tables:
        raise RobovlaError("no episodes to write")
    out_dir = Path(out_dir)
    shapes = json.loads(tables[0].schema.metadata[SHAPES_KEY])
    for i, table in enumerate(tables):
        other = json.loads(table.schema.metadata[SHAPES_KEY])
        if other != shapes:
            raise RobovlaError(f"episode {i}: feature shapes {other} differ from episode 0 {shapes}")
    build = out_dir.with_name(f".{out_dir.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    try:
        _write(build, tables, shapes, fps, dataset_name, robot_type, extra_info or {})
        replace_dir(build, out_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out_dir


def replace_dir(new: Path, target: Path) -> None:
    """Swap `new` in for `target` with renames only; the old folder is deleted last."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _sample_frames(tables: list[pa.Table], key: str, count: int = 256) -> np.ndarray:
    """Up to `count` evenly spaced decoded frames of one camera, for its image statistics."""
    column = pa.chunked_array([t.column(key) for t in tables]).combine_chunks()
    rows = np.unique(np.linspace(0, len(column) - 1, min(count, len(column))).astype(int))
    return np.stack([np.asarray(Image.open(io.BytesIO(column[int(i)]["bytes"].as_py())).convert("RGB")) for i in rows])


def _write(root: Path, tables: list[pa.Table], shapes: dict, fps: float, dataset_name: str, robot_type: str, extra: dict) -> None:
    tasks: dict[str, int] = {}
    episodes_rows, file_tables = [], []
    chunk, file, file_bytes, offset = 0, 0, 0, 0

    def flush() -> None:
        path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(file_tables), path)

    for ep, table in enumerate(tables):
        instruction = table_instruction(table)
        task_index = tasks.setdefault(instruction, len(tasks))
        n = table.num_rows
        table = table.replace_schema_metadata(None)
        table = table.append_column("episode_index", pa.array(np.full(n, ep, np.int64)))
        table = table.append_column("index", pa.array(np.arange(offset, offset + n, dtype=np.int64)))
        table = table.append_column("task_index", pa.array(np.full(n, task_index, np.int64)))
        if file_tables and file_bytes + table.nbytes > DATA_FILE_SIZE_MB * 1e6:
            flush()
            file_tables, file_bytes = [], 0
            file += 1
            if file == CHUNKS_SIZE:
                chunk, file = chunk + 1, 0
        file_tables.append(table)
        file_bytes += table.nbytes
        episodes_rows.append(
            {
                "episode_index": ep,
                "tasks": [instruction],
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": offset,
                "dataset_to_index": offset + n,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
        )
        offset += n
    flush()

    meta = root / "meta"
    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(episodes_rows).to_parquet(episodes_path, index=False)
    pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task")).to_parquet(meta / "tasks.parquet")

    def column(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(t.column(key).combine_chunks().flatten()).reshape(t.num_rows, -1) for t in tables])

    actions, state = column("action"), column("observation.state")
    grounding = column(GROUNDING_KEY) if GROUNDING_KEY in shapes else None
    stats = lerobot_stats(actions, state)
    for key in (k for k in shapes if k.startswith("observation.images.")):
        stats[key] = image_stats(_sample_frames(tables, key))
    save_json(stats, meta / "stats.json")
    save_json(compute_stats(actions, state, len(tables), dataset_name, grounding), root / "dataset_statistics.json")
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(tables),
        "total_frames": int(offset),
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_SIZE_MB,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(tables)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": _features(shapes),
        "robovla": {"dataset_name": dataset_name, **extra},
    }
    save_json(info, meta / "info.json")
