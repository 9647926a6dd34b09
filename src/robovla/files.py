"""Atomic file writes: a reader (or a rerun after a kill) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's own 0600 would hide the file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_folder_atomic(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """`fill(temporary folder)` beside `path`, then the folder replaces `path`: a reader sees the old folder or the
    new one whole, and an error (or a kill) leaves the old one in place."""
    folder = Path(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        fill(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def replace_folder(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing target is kept until the new folder is in place."""
    if not target.exists():
        os.replace(new, target)
        return
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON (with a final newline), written atomically."""
    return write_atomic(path, json.dumps(data, indent=2) + "\n")


def folder_sha256(folder: str | Path) -> str:
    """SHA-256 over a folder's files (relative path and bytes, in path order): a checkpoint's content hash."""
    import hashlib

    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or a RobovlaError that names the file when it is not valid JSON."""
    from robovla.errors import RobovlaError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise RobovlaError(f"cannot read {path}: {error}") from None
