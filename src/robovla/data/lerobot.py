"""Read a LeRobotDataset folder (v3.0, and the older v2.x layout) as a dataset of steps.

Works on folders robovla did not write: frames come from `data/**.parquet`, instructions from the tasks
table, images from PNG/JPEG bytes in the parquet or from MP4 files (decoded with PyAV).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from robovla.data.episodes import GROUNDING_KEY
from robovla.data.steps import StepDataset
from robovla.errors import RobovlaError


def lerobot_missing(root: Path) -> list[str]:
    """Files a LeRobot folder needs that `root` lacks (empty when it looks like one)."""
    missing = [] if (root / "meta/info.json").is_file() else ["meta/info.json"]
    if not any(root.glob("data/**/*.parquet")):
        missing.append("data/chunk-*/*.parquet")
    return missing


def _column_array(table: pa.Table, key: str) -> np.ndarray:
    column = table.column(key).combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        return np.asarray(column.flatten(), dtype=np.float32).reshape(table.num_rows, -1)
    return np.asarray(column, dtype=np.float32).reshape(table.num_rows, -1)


class _VideoFrames:
    """Decodes one MP4 at a time (the last one asked for) and serves frames by timestamp."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._times = np.zeros(0)
        self._frames: list[np.ndarray] = []

    def frame(self, path: Path, t: float) -> np.ndarray:
        if path != self._path:
            import av

            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
            self._path = path
            self._times = np.array([d[0] for d in decoded])
            self._frames = [d[1] for d in decoded]
        return self._frames[int(np.argmin(np.abs(self._times - t)))].copy()


class LeRobotDataset(StepDataset):
    """Steps of a LeRobotDataset folder. Every camera comes under its own name (`observation.images.front` ->
    `front`); `image` also names the first non-wrist camera and `wrist_image` a wrist one (the simulator's and
    the recipes' default camera names)."""

    def __init__(self, path: str | Path, *, chunk_size: int | None = None, dataset_name: str | None = None) -> None:
        root = Path(path)
        missing = lerobot_missing(root)
        if missing:
            raise RobovlaError(f"{root} is not a LeRobot dataset: missing {', '.join(missing)}")
        self.root = root
        self.info = json.loads((root / "meta/info.json").read_text())
        self.version = str(self.info.get("codebase_version", "v3.0"))
        self.fps = float(self.info.get("fps", 10))
        features = self.info.get("features", {})
        files = sorted(root.glob("data/**/*.parquet"))
        table = pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files], promote_options="default")
        order = "index" if "index" in table.column_names else None
        if order:
            table = table.sort_by(order)
        for key in ("action", "episode_index"):
            if key not in table.column_names:
                raise RobovlaError(f"{root}: the data parquet has no {key!r} column")
        self._table = table
        camera_keys = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
        if not camera_keys:
            raise RobovlaError(f"{root}: info.json declares no image or video feature")
        main = [k for k in camera_keys if "wrist" not in k] or camera_keys
        wrist = [k for k in camera_keys if "wrist" in k and k != main[0]]
        self._cameras = {"image": main[0], **({"wrist_image": wrist[0]} if wrist else {})}
        for key in camera_keys:  # each camera also by its own short name, decoded once whatever it is called
            self._cameras.setdefault(key.rsplit(".", 1)[-1], key)
        self._is_video = {k: features[k]["dtype"] == "video" for k in self._cameras.values()}
        self._image_columns = {k: table.column(k) for k in self._cameras.values() if not self._is_video[k]}
        self._video = _VideoFrames()
        tasks = self._read_tasks()
        n = table.num_rows
        episode_index = np.asarray(table.column("episode_index"), dtype=np.int64)
        frame_index = np.asarray(table.column("frame_index"), dtype=np.int64) if "frame_index" in table.column_names else np.zeros(n, np.int64)
        if "task_index" in table.column_names:
            instructions = [tasks.get(int(t), "") for t in np.asarray(table.column("task_index"))]
        else:
            instructions = [""] * n
        self._timestamps = np.asarray(table.column("timestamp"), dtype=np.float64) if "timestamp" in table.column_names else frame_index / self.fps
        self._episodes = self._read_episodes() if any(self._is_video.values()) else None
        proprio = _column_array(table, "observation.state") if "observation.state" in table.column_names else np.zeros((n, 0), np.float32)
        name = dataset_name or self.info.get("robovla", {}).get("dataset_name") or root.name
        super().__init__(
            dataset_name=name,
            actions=_column_array(table, "action"),
            proprio=proprio,
            episode_index=episode_index,
            frame_index=frame_index,
            instructions=instructions,
            chunk_size=chunk_size,
            grounding=_column_array(table, GROUNDING_KEY) if GROUNDING_KEY in table.column_names else None,
        )

    def _read_tasks(self) -> dict[int, str]:
        if (self.root / "meta/tasks.parquet").is_file():
            df = pd.read_parquet(self.root / "meta/tasks.parquet")
            texts = df["task"] if "task" in df.columns else df.index
            return {int(i): str(t) for i, t in zip(df["task_index"], texts)}
        if (self.root / "meta/tasks.jsonl").is_file():
            rows = [json.loads(line) for line in (self.root / "meta/tasks.jsonl").read_text().splitlines() if line.strip()]
            return {int(r["task_index"]): str(r["task"]) for r in rows}
        return {}

    def _read_episodes(self) -> dict[int, dict]:
        if self.version.startswith("v2"):
            lines = (self.root / "meta/episodes.jsonl").read_text().splitlines()
            return {int(r["episode_index"]): r for r in map(json.loads, filter(str.strip, lines))}
        files = sorted(self.root.glob("meta/episodes/**/*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files])
        return {int(r["episode_index"]): r.to_dict() for _, r in df.iterrows()}

    def _video_path(self, key: str, episode: int) -> tuple[Path, float]:
        template = self.info["video_path"]
        chunks = int(self.info.get("chunks_size", 1000))
        if self.version.startswith("v2"):
            return self.root / template.format(episode_chunk=episode // chunks, video_key=key, episode_index=episode), 0.0
        meta = self._episodes[episode]
        path = template.format(video_key=key, chunk_index=int(meta[f"videos/{key}/chunk_index"]), file_index=int(meta[f"videos/{key}/file_index"]))
        return self.root / path, float(meta.get(f"videos/{key}/from_timestamp", 0.0))

    def _images(self, i: int) -> dict[str, np.ndarray]:
        decoded: dict[str, np.ndarray] = {}
        out = {}
        for name, key in self._cameras.items():  # an alias of a camera already decoded gets its own copy
            out[name] = decoded[key].copy() if key in decoded else decoded.setdefault(key, self._decode(key, i))
        return out

    def _decode(self, key: str, i: int) -> np.ndarray:
        if self._is_video[key]:
            path, start = self._video_path(key, int(self.episode_index[i]))
            return self._video.frame(path, start + float(self._timestamps[i]))
        value = self._image_columns[key][i].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None:
            data = (self.root / value["path"]).read_bytes()
        return np.array(Image.open(io.BytesIO(data)).convert("RGB"))
