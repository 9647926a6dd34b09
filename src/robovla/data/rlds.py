"""Read TFDS-built RLDS folders (Open X-Embodiment) without TensorFlow.

A folder holds `features.json` (the TFDS feature tree), `dataset_info.json` (name, splits) and
`<name>-<split>.tfrecord-NNNNN-of-NNNNN` shards of `tf.train.Example` episodes whose step features are
flattened to `steps/...` keys. Records are framed with the `tfrecord` package and parsed with its protobuf
classes; episodes are standardized by the dataset's entry in `robovla.data.oxe`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from robovla.data.oxe import GENERIC, OXE_DATASETS, standardize
from robovla.data.steps import StepDataset
from robovla.errors import RobovlaError

INSTRUCTION_KEYS = ("language_instruction", "observation/natural_language_instruction")


@dataclass(frozen=True)
class Feature:
    kind: str  # tensor | image | text
    shape: tuple[int, ...]
    dtype: str


def rlds_missing(root: Path) -> list[str]:
    """Files an RLDS folder needs that `root` lacks."""
    missing = [name for name in ("features.json", "dataset_info.json") if not (root / name).is_file()]
    if not any(root.glob("*.tfrecord*")):
        missing.append("*.tfrecord-*")
    return missing


def parse_features(tree: dict, prefix: str = "") -> dict[str, Feature]:
    """Flatten a TFDS `features.json` tree to {'steps/observation/image': Feature, ...}."""
    out: dict[str, Feature] = {}
    if "featuresDict" in tree:
        for name, child in tree["featuresDict"]["features"].items():
            out.update(parse_features(child, f"{prefix}{name}/"))
    elif "sequence" in tree:
        out.update(parse_features(tree["sequence"]["feature"], prefix))
    else:
        key = prefix.rstrip("/")
        for kind in ("image", "tensor", "text"):
            if kind in tree:
                spec = tree[kind]
                dims = tuple(int(d) for d in spec.get("shape", {}).get("dimensions", []))
                out[key] = Feature(kind, dims, spec.get("dtype", "string" if kind == "text" else "float32"))
                break
    return out


def _read_examples(path: Path):
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    for record in tfrecord_iterator(str(path)):
        yield example_pb2.Example.FromString(bytes(record))


def _values(feature) -> list:
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


class RLDSDataset(StepDataset):
    """Steps of an RLDS folder, standardized to 7-D actions with gripper 1 = open."""

    def __init__(
        self,
        path: str | Path,
        *,
        dataset_name: str | None = None,
        split: str = "train",
        chunk_size: int | None = None,
    ) -> None:
        root = Path(path)
        missing = rlds_missing(root)
        if missing:
            raise RobovlaError(f"{root} is not an RLDS dataset: missing {', '.join(missing)}")
        info = json.loads((root / "dataset_info.json").read_text())
        name = dataset_name or info.get("name") or root.name
        features = parse_features(json.loads((root / "features.json").read_text()))
        entry = OXE_DATASETS.get(name, GENERIC)
        image_keys = [k[len("steps/") :] for k, f in features.items() if f.kind == "image" and k.startswith("steps/")]
        if not image_keys:
            raise RobovlaError(f"{root}: features.json declares no step image")
        image_key = entry.image or image_keys[0]
        if image_key not in image_keys:
            raise RobovlaError(f"{root}: dataset {name!r} expects image {image_key!r}, found {image_keys}")
        shards = sorted(p for p in root.glob("*.tfrecord*") if f"-{split}." in p.name) or sorted(root.glob("*.tfrecord*"))
        self._frames: list[bytes] = []
        self._wrist: list[bytes] = []
        actions, proprio, episode_index, frame_index, instructions = [], [], [], [], []
        for shard in shards:
            for example in _read_examples(shard):
                trajectory, texts = self._trajectory(example, features)
                a, p, start = standardize(trajectory, entry)
                n = len(a)
                if not np.isfinite(a).all():
                    raise RobovlaError(f"{root}: episode {len(set(episode_index))} has NaN/inf actions")
                frames = trajectory[image_key][start : start + n]
                self._frames.extend(frames)
                if entry.wrist and entry.wrist in trajectory:
                    self._wrist.extend(trajectory[entry.wrist][start : start + n])
                text = next((texts[k] for k in INSTRUCTION_KEYS if k in texts), [""] * (start + n))
                instructions.extend(str(t) for t in text[start : start + n])
                actions.append(a)
                proprio.append(p)
                episode_index.append(np.full(n, len(actions) - 1))
                frame_index.append(np.arange(n))
        if not actions:
            raise RobovlaError(f"{root}: no episodes in {', '.join(p.name for p in shards)}")
        widths = {p.shape[1] for p in proprio}
        if len(widths) != 1:
            raise RobovlaError(f"{root}: proprio width differs between episodes: {sorted(widths)}")
        super().__init__(
            dataset_name=name,
            actions=np.concatenate(actions),
            proprio=np.concatenate(proprio),
            episode_index=np.concatenate(episode_index),
            frame_index=np.concatenate(frame_index),
            instructions=instructions,
            chunk_size=chunk_size,
        )

    @staticmethod
    def _trajectory(example, features: dict[str, Feature]) -> tuple[dict[str, np.ndarray | list], dict[str, list[str]]]:
        """Step arrays (images stay encoded bytes) and step texts of one episode example."""
        trajectory: dict = {}
        texts: dict[str, list[str]] = {}
        fmap = example.features.feature
        for full_key, feature in features.items():
            if not full_key.startswith("steps/") or full_key not in fmap:
                continue
            key = full_key[len("steps/") :]
            values = _values(fmap[full_key])
            if feature.kind == "image":
                trajectory[key] = values
            elif feature.kind == "text":
                texts[key] = [v.decode("utf-8") for v in values]
            else:
                array = np.asarray(values, dtype=np.float32)
                trajectory[key] = array.reshape(-1, *feature.shape) if feature.shape else array
        return trajectory, texts

    def _images(self, i: int) -> dict[str, np.ndarray]:
        out = {"image": np.array(Image.open(io.BytesIO(self._frames[i])).convert("RGB"))}
        if self._wrist:
            out["wrist_image"] = np.array(Image.open(io.BytesIO(self._wrist[i])).convert("RGB"))
        return out
