"""The episode log: one JSON line per finished episode, the record every evaluation figure is derived from.

Lines are appended and flushed to disk one at a time, so a run killed at any point keeps every episode that
finished before it. Reading tolerates what a kill can leave behind: a truncated or corrupt line is reported
and dropped (its episode runs again), and the file is rewritten without it before anything new is appended.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robovla.files import write_atomic

logger = logging.getLogger("robovla.eval")

LOG_NAME = "episodes.jsonl"


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode. `condition` is the suite, plus ":paraphrase" when its instructions were rewritten."""

    condition: str
    suite: str
    instructions: str  # "suite" | "paraphrase"
    episode: int  # index within its condition: the episode's seed is settings.seed + episode
    seed: int
    embodiment: str
    family: str
    instruction: str
    success: bool
    steps: int
    seconds: float  # wall time from the start of its batch of episodes to its end
    failure: str | None  # None on success; else tasks.FAILURE_REASONS' key
    handled: str | None = None  # the first object the robot moved: target, other or none (None: not recorded)

    @property
    def key(self) -> tuple[str, int]:
        return self.condition, self.episode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = set(EpisodeRecord.__dataclass_fields__)
_OPTIONAL = {"handled"}  # absent from logs written before it was recorded


def _parse(line: str) -> EpisodeRecord | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not (_FIELDS - _OPTIONAL) <= set(data) <= _FIELDS:
        return None
    try:
        record = EpisodeRecord(**data)
    except TypeError:
        return None
    types_ok = isinstance(record.episode, int) and isinstance(record.success, bool) and isinstance(record.steps, int)
    return record if types_ok else None


class EpisodeLog:
    """The finished episodes of one evaluation folder (or of none: `path=None` keeps them in memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: dict[tuple[str, int], EpisodeRecord] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        good, bad = [], 0
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                bad += 1
                logger.warning("%s line %d is corrupt or truncated: that episode will run again", path, number)
                continue
            good.append(line)
            self.records[record.key] = record
        if bad:  # rewrite without the bad lines, so appending never glues a record to a torn one
            write_atomic(path, "".join(line + "\n" for line in good))

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: EpisodeRecord) -> None:
        """Keep `record`; on disk, one line written and flushed before this returns."""
        self.records[record.key] = record
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
