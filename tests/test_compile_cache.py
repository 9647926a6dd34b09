"""The compile cache: a file robovla wrote for this model and torch is loaded; anything else is rebuilt, never
loaded; a second start of a compiled policy builds no graph."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY_CHECKPOINT

from robovla.model.compile_cache import CompileCache, compile_counters


@pytest.fixture
def fresh_inductor(tmp_path, monkeypatch):
    """A process-wide clean slate: no dynamo graphs, an empty inductor cache folder."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compile_and_run() -> None:
    def scale_and_shift(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * 3.0 + 1.0).sum(dim=-1)

    torch.compile(scale_and_shift, dynamic=True)(torch.randn(4, 8))


def saved_cache(folder, fingerprint: str = "a" * 64) -> CompileCache:
    cache = CompileCache(folder, fingerprint)
    assert not cache.load()  # none yet: this process's inductor folder starts empty
    compile_and_run()
    assert cache.save() and cache.path.exists()
    return cache


def test_a_saved_cache_loads_and_serves_the_graph(tmp_path, fresh_inductor):
    cache = saved_cache(tmp_path / "cache")
    torch._dynamo.reset()
    again = CompileCache(cache.folder, cache.fingerprint)
    assert again.load() and again.inductor_folder != cache.inductor_folder
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(again.inductor_folder)
    before = compile_counters()
    compile_and_run()
    after = compile_counters()
    assert after["built"] == before["built"] and after["from_cache"] > before["from_cache"]


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[: len(data) - 100], "truncated or altered"),
    (lambda data: data.replace(torch.__version__.encode(), b"1.0.0", 1), "from torch 1.0.0"),
    (lambda data: b"\x80\x04garbage", "no header"),
])
def test_a_damaged_or_foreign_cache_is_rebuilt_never_loaded(tmp_path, fresh_inductor, caplog, damage, words):
    cache = saved_cache(tmp_path / "cache")
    cache.path.write_bytes(damage(cache.path.read_bytes()))
    again = CompileCache(cache.folder, cache.fingerprint)
    with caplog.at_level(logging.INFO, logger="robovla.compile_cache"):
        assert not again.load()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and words in warnings[0] and "rebuilding" in warnings[0]
    assert not cache.path.exists() and not any(again.inductor_folder.iterdir())  # nothing of it was used
    torch._dynamo.reset()
    before = compile_counters()
    compile_and_run()
    assert compile_counters()["built"] > before["built"]
    assert again.save() and CompileCache(cache.folder, cache.fingerprint).load()


def test_another_models_cache_is_not_loaded(tmp_path, fresh_inductor, caplog):
    cache = saved_cache(tmp_path / "cache", "a" * 64)
    other = CompileCache(cache.folder, "b" * 64)
    os.replace(cache.path, other.path)  # a file under this model's name that another model wrote
    with caplog.at_level(logging.WARNING, logger="robovla.compile_cache"):
        assert not other.load()
    assert "from another model" in caplog.text


@pytest.mark.skipif(os.getuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_turns_the_cache_off_and_says_so_once(tmp_path, fresh_inductor, caplog):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    cache = CompileCache(folder, "c" * 64)
    with caplog.at_level(logging.WARNING, logger="robovla.compile_cache"):
        assert not cache.load()
        compile_and_run()
        assert not cache.save()
    assert len(caplog.records) == 1 and "not writable" in caplog.text and not cache.enabled


def test_a_cache_folder_that_cannot_be_created_turns_the_cache_off(tmp_path, fresh_inductor, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = CompileCache(blocker / "cache", "d" * 64)
    with caplog.at_level(logging.WARNING, logger="robovla.compile_cache"):
        assert not cache.load() and not cache.save()
    assert len(caplog.records) == 1 and "cache off" in caplog.text


def test_a_file_others_may_write_is_not_trusted(tmp_path, fresh_inductor, caplog):
    cache = saved_cache(tmp_path / "cache")
    cache.path.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="robovla.compile_cache"):
        assert not CompileCache(cache.folder, cache.fingerprint).load()
    assert "another user" in caplog.text


def test_the_frozen_mode_is_never_cached(tmp_path):
    import robovla
    from robovla import RobovlaError

    with pytest.raises(ValueError, match="only the 'lean' mode"):
        CompileCache(tmp_path, "e" * 64, mode="frozen")
    policy = robovla.Policy(robovla.load_pretrained(TINY_CHECKPOINT))
    with pytest.raises(RobovlaError, match="cannot be cached"):
        policy.compile("frozen", cache=tmp_path)


START = """
import json, sys
import robovla
policy = robovla.Policy(robovla.load_pretrained(sys.argv[1]), "bridge_orig").compile(cache=sys.argv[2])
report = policy.warm_up()
print(json.dumps({"seconds": report.seconds, "built": report.graphs_built, "from_cache": report.graphs_from_cache, "saved": report.cache_saved,
                  "loaded": policy.compile_cache.loaded}))
"""


@pytest.mark.slow  # two compiled starts of the tiny model, ~2 min on 2 cores
def test_a_second_start_with_the_cache_builds_no_graph(tmp_path):
    """Each start is a new process with an empty inductor folder, so only robovla's file carries the graphs."""
    def start(name: str) -> dict:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / name)}
        done = subprocess.run([sys.executable, "-c", START, str(TINY_CHECKPOINT), str(tmp_path / "cache")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = start("inductor-1")
    assert first["built"] > 0 and first["saved"] and not first["loaded"]
    second = start("inductor-2")
    assert second["loaded"] and second["built"] == 0 and second["from_cache"] >= first["built"]
    assert not second["saved"]  # nothing new to save
