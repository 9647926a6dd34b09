"""`make demo` runs end to end (whichever branch applies: shipped policy, or the pieces without one)."""

from __future__ import annotations

from robovla.demo import main, shipped_policy_path


def test_demo_runs_and_saves_a_filmstrip(tmp_path, capsys):
    main(["--episodes", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "success" in out and "episode 1:" in out
    assert (tmp_path / "episode.png").stat().st_size > 0
    if not (shipped_policy_path() / "config.json").exists():
        assert "saved and reloaded an openvla-7b-layout checkpoint" in out
        assert "success 2/2" in out  # the scripted expert solves its episodes
