"""Evaluation figures: Wilson intervals, results.json from episode records, the report, the plot and videos."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from PIL import Image

from robovla.eval.results import format_tables, one_line, summarize
from robovla.eval.stats import rate_summary, wilson_interval


def direct_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The textbook form: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


@pytest.mark.parametrize("k, n, expected", [(0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)),
                                            (5, 10, (0.2366, 0.7634)), (41, 50, (0.6920, 0.9023)),
                                            (1, 20, (0.0089, 0.2361))])
def test_wilson_interval_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == expected
    assert np.allclose((lo, hi), direct_wilson(k, n), atol=1e-12)


def test_wilson_interval_edges_and_bad_counts():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert rate_summary(3, 4) == {"n": 4, "successes": 3, "rate": 0.75, "ci95": [0.3006, 0.9544]}
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def records(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for condition in ("tabletop-train", "tabletop-train:paraphrase"):
        for k in range(12):
            success = rng.random() < 0.6
            rows.append({"condition": condition, "suite": "tabletop-train",
                         "instructions": "paraphrase" if ":" in condition else "suite", "episode": k,
                         "seed": 1_000_000 + k, "embodiment": "default",
                         "family": ("pick_place", "stack", "move_near", "push")[k % 4], "instruction": "x",
                         "success": success, "steps": rng.randint(10, 80), "seconds": rng.random(),
                         "failure": None if success else rng.choice(["timeout", "dropped", "wrong_object"])})
    return rows


HEADER = {"command": "robovla eval ...", "policy": {"kind": "expert", "name": "scripted-expert"},
          "conditions": ["tabletop-train", "tabletop-train:paraphrase"]}


def test_summarize_counts_families_failures_and_is_order_free():
    rows = records()
    results = summarize(rows, HEADER)
    train = [r for r in rows if r["condition"] == "tabletop-train"]
    row = results["conditions"]["tabletop-train"]
    assert row["n"] == 12 and row["successes"] == sum(r["success"] for r in train)
    assert row["ci95"] == [round(v, 4) for v in wilson_interval(row["successes"], 12)]
    assert sum(row["failures"].values()) == 12 - row["successes"]
    assert list(row["families"]) == ["pick_place", "stack", "move_near", "push"]
    assert sum(f["n"] for f in row["families"].values()) == 12
    assert results["overall"]["n"] == 24 and list(results["conditions"]) == HEADER["conditions"]
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    again = summarize(shuffled + [dict(rows[0], seconds=9.0)], HEADER)  # a duplicate: the last one counts
    assert {k: v for k, v in again.items() if k != "timing"} == {k: v for k, v in results.items() if k != "timing"}
    assert "timeout" in format_tables(results) and one_line("tabletop-train", row).startswith(
        f"tabletop-train: {row['successes']}/12 = ")


def test_report_plot_and_videos(tmp_path):
    from robovla.eval.report import write_report
    from robovla.eval.video import write_episode_video, write_still_grid

    frames = [np.full((64, 64, 3), 40 * t, dtype=np.uint8) for t in range(5)]
    (tmp_path / "videos").mkdir()
    video = write_episode_video(frames, tmp_path / "videos" / "ep0", "put the red cube in the bowl",
                                "success in 4 steps", fps=2)
    assert video.suffix in (".mp4", ".gif")
    if video.suffix == ".mp4":
        import imageio.v3 as iio

        shown = iio.imread(video)
    else:
        shown = np.stack([np.asarray(f.convert("RGB")) for f in _gif_frames(video)])
    assert len(shown) == 5 + 2  # the frames, then the outcome held for a second
    assert shown.shape[1] >= 256 and np.abs(shown[0, :20].astype(int) - 0).max() > 100  # the caption band has text
    Image.fromarray(frames[-1]).save(tmp_path / "videos" / "ep0.png")
    grid = write_still_grid([(frames[-1], "a", "b", True)] * 3, tmp_path / "grid.png", columns=2)
    assert Image.open(grid).size == (2 * (256 + 4), 2 * (256 + 44 + 4))
    results = summarize(records(), HEADER)
    videos = [{"condition": "tabletop-train", "episode": 0, "instruction": "put the red cube in the bowl",
               "success": True, "outcome": "success in 4 steps", "video": "videos/" + video.name,
               "still": "videos/ep0.png"}]
    write_report(tmp_path, results, videos)
    report = (tmp_path / "report.md").read_text()
    assert "| tabletop-train |" in report and "95%" in report and "robovla eval ..." in report
    assert f"](videos/{video.name})" in report and (tmp_path / "videos" / "grid.png").exists()
    png = Image.open(tmp_path / "success.png")
    assert png.format == "PNG" and png.size[0] > 600 and np.asarray(png).std() > 10
    json.dumps(results)  # every value is plain JSON


def _gif_frames(path):
    image = Image.open(path)
    for k in range(image.n_frames):
        image.seek(k)
        yield image.copy()


def test_videos_fall_back_to_gif_without_an_encoder(tmp_path, monkeypatch):
    import sys

    from robovla.eval.video import write_episode_video

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if the encoder package were not installed
    frames = [np.full((32, 48, 3), 30 * t, dtype=np.uint8) for t in range(3)]
    path = write_episode_video(frames, tmp_path / "ep", "stack the cube", "failure: dropped", fps=4)
    assert path.suffix == ".gif" and not list(tmp_path.glob(".*tmp*"))
    shown = list(_gif_frames(path))  # Pillow merges identical frames: the held outcome is one longer frame
    assert sum(frame.info["duration"] for frame in shown) == (3 + 4) * 250
    assert shown[0].size[1] == 256 + 2 * 22  # upscaled to 256 px high, plus the caption bands
