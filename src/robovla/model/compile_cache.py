"""Compiled inference kept across restarts: one validated file per model holding what inductor built.

A compiled policy spends its start-up in inductor: generating code for each graph and building its C++ kernels.
Inductor keeps both in its cache folder ($TORCHINDUCTOR_CACHE_DIR), keyed by what they compute, so a process that
finds them there skips the work; what remains is dynamo's tracing. This module bundles that folder into one file
per model and compile mode, behind a header that says what made it:

    {"format": 1, "torch": "2.14.1", "fingerprint": "...", "mode": "lean", "bytes": N, "sha256": "..."}\n<tar>

At `load()` the bundle is checked and unpacked into a fresh private folder, and this process's inductor cache
points there (it is process-wide state: torch reads the variable at each use); without a bundle the private
folder starts empty, so only what this module checked is ever used. `save()` bundles the folder again. A file
from another torch version, another model, a truncated or altered file is rebuilt (one log line), never loaded.
The fingerprint covers the model's configuration and every tensor's name, shape, dtype and device, not the
values: in the "lean" compile mode the weights are the graphs' inputs, so compiled code depends on shapes only.
The "frozen" mode bakes the weights into the graphs as constants: it is never cached.

The bundle holds compiled code that runs when loaded, so the cache is local state like inductor's own folder:
robovla writes it into a folder only its user can write and loads only files that user owns and nobody else may
write. Never copy a compile cache from elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robovla.files import write_atomic

logger = logging.getLogger("robovla.compile_cache")

CACHE_ENV = "ROBOVLA_COMPILE_CACHE"
FORMAT = 1


def default_cache_folder() -> Path:
    """$ROBOVLA_COMPILE_CACHE, else $XDG_CACHE_HOME/robovla/compile, else ~/.cache/robovla/compile."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robovla" / "compile"


def model_fingerprint(model: torch.nn.Module, config: dict, mode: str) -> str:
    """sha256 over the configuration, each tensor's name/shape/dtype/device/type and the compile mode."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(mode.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{tensor.device.type}:{type(tensor).__name__}\n"
                      .encode())
    return digest.hexdigest()


INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"
SKIPPED = frozenset({"locks"})  # inductor's lock files: per process, never worth keeping


def compile_counters() -> dict[str, int]:
    """Inductor's graph counters of this process: graphs it built (cacheable or not) and graphs a cache gave."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {"built": int(inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"]),
            "from_cache": int(inductor["fxgraph_cache_hit"])}


@dataclass
class CompileCache:
    """The compile bundle of one model: `load()` before the first compiled call, `save()` after warm-up."""

    folder: Path
    fingerprint: str
    mode: str = "lean"
    enabled: bool = True
    loaded: bool = field(default=False, init=False)
    inductor_folder: Path | None = field(default=None, init=False)  # this process's, after load()

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.mode != "lean":
            raise ValueError(f"the {self.mode!r} compile mode bakes the weights into the graphs as constants, one "
                             "copy per graph: only the 'lean' mode can be cached")

    @property
    def path(self) -> Path:
        return self.folder / f"{self.fingerprint[:24]}-{self.mode}.bin"

    def _writable_folder(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            return self._disable(f"cannot create {self.folder} ({error.strerror})")
        if not os.access(self.folder, os.W_OK | os.X_OK):
            return self._disable(f"{self.folder} is not writable")
        return True

    def _disable(self, reason: str) -> bool:
        logger.warning("compile cache off: %s; every start compiles from nothing", reason)
        self.enabled = False
        return False

    def load(self) -> bool:
        """Point this process's inductor cache at a private folder holding the bundle's contents; False (and why,
        in one log line) if there is no bundle to trust, and the folder starts empty. Call before compiling."""
        if not self.enabled or not self._writable_folder():
            return False
        self.inductor_folder = Path(tempfile.mkdtemp(prefix="robovla-inductor-"))
        weakref.finalize(self, shutil.rmtree, self.inductor_folder, ignore_errors=True)  # at exit at the latest
        os.environ[INDUCTOR_ENV] = str(self.inductor_folder)
        if not self.path.exists():
            logger.info("compile cache: none yet for this model (%s); compiling, then saving", self.path)
            return False
        start = time.perf_counter()
        problem, payload = self._read()
        if problem is None:
            try:
                with tarfile.open(fileobj=io.BytesIO(payload)) as bundle:
                    bundle.extractall(self.inductor_folder, filter="data")
            except (tarfile.TarError, OSError) as error:
                problem = f"not a readable bundle ({error})"
        if problem is not None:
            logger.warning("compile cache: %s is %s; rebuilding it", self.path, problem)
            self.path.unlink(missing_ok=True)
            return False
        self.loaded = True
        logger.info("compile cache: loaded %s (%.1f MB, %.1f s)", self.path, len(payload) / 1e6,
                    time.perf_counter() - start)
        return True

    def _read(self) -> tuple[str | None, bytes]:
        """(None, blob) for a file this process may trust, else (what is wrong with it, b"")."""
        try:
            info = self.path.stat()
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return "writable by another user (or not ours)", b""
            data = self.path.read_bytes()
        except OSError as error:
            return f"unreadable ({error.strerror})", b""
        line, _, payload = data.partition(b"\n")
        try:
            header = json.loads(line)
        except ValueError:
            return "not a compile cache (no header)", b""
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            return "in an unknown format", b""
        if header.get("torch") != torch.__version__:
            return f"from torch {header.get('torch')} (this is {torch.__version__})", b""
        if header.get("fingerprint") != self.fingerprint or header.get("mode") != self.mode:
            return "from another model or compile mode", b""
        if header.get("bytes") != len(payload) or header.get("sha256") != hashlib.sha256(payload).hexdigest():
            return f"truncated or altered ({len(payload)} of {header.get('bytes')} bytes, checksum differs)", b""
        return None, payload

    def save(self) -> bool:
        """Bundle what this process's inductor folder holds (atomically); False if `load()` was not called or the
        folder refused the file."""
        if not self.enabled or self.inductor_folder is None or not self._writable_folder():
            return False
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as bundle:
            for entry in sorted(self.inductor_folder.iterdir()):
                if entry.name not in SKIPPED:
                    bundle.add(entry, arcname=entry.name)
        payload = buffer.getvalue()
        header = {"format": FORMAT, "torch": torch.__version__, "fingerprint": self.fingerprint, "mode": self.mode,
                  "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        try:
            write_atomic(self.path, json.dumps(header).encode() + b"\n" + payload)
            os.chmod(self.path, 0o600)
        except OSError as error:
            return self._disable(f"cannot write {self.path} ({error.strerror})")
        logger.info("compile cache: saved %s (%.1f MB)", self.path, len(payload) / 1e6)
        return True
