"""The evaluation harness: policies, seeded batched rollouts, the episode log, resume, workers and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import robovla
from robovla.cli import main
from robovla.demo import shipped_policy_path

SHIPPED = shipped_policy_path()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="no shipped policy")
STATS = {"tabletop_default": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0],
                                         "mask": [True] * 6 + [False]},
                              "proprio": {"q01": [-0.2, -0.13, 0.0, -0.01, -0.01, -1.2, 0.0],
                                          "q99": [0.2, 0.13, 0.18, 0.01, 0.01, 1.2, 1.0]}}}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    model = robovla.build_model("tabletop-cpu", norm_stats=STATS, seed=1)
    folder = robovla.save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "policy")
    return model, folder


def eval_cli(*args: str) -> int:
    return main(["eval", *args])


def results_of(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


def without_timing(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "timing"}


# ------------------------------------------------------------------------------------------ reference policies
def test_scripted_expert_solves_every_suite(tmp_path):
    assert eval_cli("--policy", "expert", "--suite", "all", "--episodes", "20", "--num-envs", "20", "--out",
                    str(tmp_path), "--quiet") == 0
    results = results_of(tmp_path)
    assert results["conditions"].keys() == {"tabletop-train", "tabletop-visual", "tabletop-motion",
                                            "tabletop-physical", "tabletop-semantic"}
    for name, row in results["conditions"].items():
        assert row["n"] == 20 and row["rate"] >= 0.95, (name, row)
    assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 100
    assert (tmp_path / "report.md").exists() and (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_random_policy_scores_near_zero_and_says_why(tmp_path):
    assert eval_cli("--policy", "random", "--episodes", "20", "--num-envs", "20", "--out", str(tmp_path),
                    "--quiet") == 0
    row = results_of(tmp_path)["conditions"]["tabletop-train"]
    assert row["rate"] <= 0.1 and row["ci95"][0] == 0.0
    assert sum(row["failures"].values()) == row["n"] - row["successes"]
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in sorted(records, key=lambda r: r["episode"])] == list(range(1_000_000, 1_000_020))
    assert all(r["failure"] in ("timeout", "wrong_object", "dropped") for r in records if not r["success"])


def test_failure_reasons_from_the_simulator_state():
    from robovla.sim.tasks import WorldState, failure_reason, sample_episode
    from robovla.sim.variations import get_suite

    spec = sample_episode(np.random.default_rng(3), get_suite("tabletop-train"), "pick_place")
    start = {o.name: np.array([o.x, o.y, o.size / 2]) for o in spec.objects}
    other = spec.objects[1].name

    def state(**moved):
        positions = {name: xyz + moved.get(name, 0) for name, xyz in start.items()}
        return WorldState(positions, gripper_open=True)

    assert failure_reason(spec, start, state(), target_lifted=False) == "timeout"
    assert failure_reason(spec, start, state(**{other: np.array([0.08, 0, 0])}), False) == "wrong_object"
    assert failure_reason(spec, start, state(obj0=np.array([0.05, 0, 0])), target_lifted=True) == "dropped"
    held = state(obj0=np.array([0.0, 0, 0.1]))  # lifted and still up in the gripper when time ran out
    assert failure_reason(spec, start, held, target_lifted=True) == "timeout"


def test_paraphrases_keep_the_scene_and_use_no_training_phrasing():
    from robovla.sim import make_env
    from robovla.sim.tasks import PARAPHRASES, TEMPLATES

    assert not set(p for ps in PARAPHRASES.values() for p in ps) & set(
        t for family in TEMPLATES.values() for t in family.values())
    plain, para = make_env(image_size=32), make_env(image_size=32, instructions="paraphrase")
    for seed in range(8):
        _, a = plain.reset(seed=seed)
        _, b = para.reset(seed=seed)
        assert plain.episode.objects == para.episode.objects and a["task"] == b["task"]
        goal = para.episode.entity(para.episode.goal)
        assert b["instruction"] in {t.format(target=para.episode.target.phrase, goal=goal.phrase,
                                             prep="in" if getattr(goal, "kind", "") in ("bowl", "bin") else "on")
                                    for t in PARAPHRASES[b["task"]]}
    plain.close()
    para.close()


# ------------------------------------------------------------------------------------- resume, workers, videos
@needs_shipped
def test_kill_and_resume_gives_the_results_of_one_run(tmp_path, caplog):
    args = ["--checkpoint", str(SHIPPED), "--episodes", "8", "--num-envs", "4", "--quiet"]
    killed = tmp_path / "killed"
    log = killed / "episodes.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "robovla.cli", "eval", *args, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = len(log.read_text().splitlines())
    assert 2 <= kept < 8 and not (killed / "results.json").exists()
    with open(log, "a") as handle:  # what a kill in the middle of a write leaves
        handle.write('{"condition": "tabletop-train", "suite": "tab')
    assert eval_cli(*args, "--out", str(killed)) == 0
    assert "corrupt or truncated" in caplog.text
    once = tmp_path / "once"
    assert eval_cli(*args, "--out", str(once)) == 0
    same_but_folder = {k: v for k, v in results_of(once).items() if k != "command"}
    assert {k: v for k, v in without_timing(results_of(killed)).items() if k != "command"} == \
        without_timing(same_but_folder)
    assert results_of(killed)["timing"]["sessions"] == 2
    assert 0 < results_of(once)["overall"]["successes"] < 8  # a result worth comparing: some of each


@needs_shipped
def test_worker_processes_do_not_change_results(tmp_path):
    args = ["--checkpoint", str(SHIPPED), "--episodes", "6", "--num-envs", "3", "--quiet",
            "--suite", "tabletop-train", "--suite", "tabletop-motion"]
    assert eval_cli(*args, "--out", str(tmp_path / "w1"), "--workers", "1") == 0
    assert eval_cli(*args, "--out", str(tmp_path / "w2"), "--workers", "2") == 0
    w1, w2 = (without_timing(results_of(tmp_path / w)) for w in ("w1", "w2"))
    assert w1.pop("command").replace("w1", "w2") == w2.pop("command").replace("--workers 2", "--workers 1")
    assert w1 == w2


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, capsys, caplog):
    out = str(tmp_path)
    with caplog.at_level("INFO", logger="robovla.eval"):
        assert eval_cli("--policy", "expert", "--episodes", "2", "--out", out, "--quiet") == 0
    assert "tabletop-train episodes 0-1: 2/2 succeeded; 2/2 episodes done, 100% success so far" in caplog.text
    first = results_of(tmp_path)
    assert eval_cli("--policy", "expert", "--episodes", "3", "--out", out) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "settings episodes: 2 before, 3 now" in err
    assert eval_cli("--resume", "--out", out, "--quiet") == 0  # the recorded command, nothing left to run
    again = results_of(tmp_path)
    assert without_timing(again) == without_timing(first) and again["timing"]["sessions"] == 2
    assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 2
    run = json.loads((tmp_path / "run.json").read_text())  # episodes made on another MuJoCo would not repeat
    (tmp_path / "run.json").write_text(json.dumps({**run, "simulator": {"mujoco": "0.0.1"}}))
    assert eval_cli("--resume", "--out", out, "--quiet") == 2
    assert "simulator mujoco: '0.0.1' before" in capsys.readouterr().err


def test_videos_and_report(tmp_path):
    assert eval_cli("--policy", "expert", "--episodes", "2", "--videos", "1", "--suite", "tabletop-train",
                    "--instructions", "paraphrase", "--out", str(tmp_path), "--quiet") == 0
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert any(v.startswith("tabletop-train-paraphrase_ep000.") and v.endswith((".mp4", ".gif")) for v in videos)
    assert "tabletop-train-paraphrase_ep000.png" in videos and not any("ep001" in v for v in videos)
    report = (tmp_path / "report.md").read_text()
    assert "tabletop-train:paraphrase" in report and "videos/tabletop-train-paraphrase_ep000" in report
    assert results_of(tmp_path)["conditions"]["tabletop-train:paraphrase"]["instructions"] == "paraphrase"


def test_checkpoint_actions_come_in_batches_of_the_settings(policy):
    from robovla.eval import CheckpointPolicy, EvalSettings, evaluate

    model, folder = policy
    a = evaluate(CheckpointPolicy(model, folder), EvalSettings(episodes=3, num_envs=3, seed=11, progress=False))
    b = evaluate(CheckpointPolicy(model, folder), EvalSettings(episodes=3, num_envs=3, seed=11, progress=False))
    assert without_timing(a) == without_timing(b)
    assert a["policy"]["checkpoint_sha256"] and a["conditions"]["tabletop-train"]["n"] == 3


# ------------------------------------------------------------------------------------------------ bad input
def test_unknown_suite_and_policy_are_listed(policy, capsys):
    _, folder = policy
    assert eval_cli("--checkpoint", str(folder), "--suite", "tabletop-mars", "--episodes", "1") == 2
    assert "unknown suite 'tabletop-mars'; valid: tabletop-train" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        eval_cli("--policy", "oracle")
    assert exit_info.value.code == 2
    assert "invalid choice: 'oracle' (choose from 'checkpoint', 'expert', 'random')" in capsys.readouterr().err
    assert eval_cli("--episodes", "1") == 2
    assert "say what to evaluate" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_the_suite_names_both_sides(tmp_path, capsys):
    stats = {"another_robot": STATS["tabletop_default"]}
    folder = robovla.save_pretrained(robovla.build_model("tabletop-cpu", norm_stats=stats, seed=1), tmp_path / "c")
    assert eval_cli("--checkpoint", str(folder), "--episodes", "1") == 2
    err = capsys.readouterr().err
    assert "knows the datasets ['another_robot']" in err and "'default' embodiment's suites need 'tabletop_default'" in err


def test_an_unreachable_server_is_one_line(capsys):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert eval_cli("--server", f"http://127.0.0.1:{port}", "--episodes", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"robovla eval: error: cannot reach a policy server at http://127.0.0.1:{port}")
    assert len(err.splitlines()) == 1


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert eval_cli("--policy", "expert", "--episodes", "1", "--out", str(blocker / "results")) == 2
    assert f"cannot write evaluation results to {blocker / 'results'}" in capsys.readouterr().err


def test_option_conflicts(policy, capsys):
    _, folder = policy
    assert eval_cli("--checkpoint", str(folder), "--episodes", "1", "--ensemble", "0", "--execute", "2") == 2
    assert "--ensemble asks at every step; it cannot be combined with --execute" in capsys.readouterr().err
    assert eval_cli("--checkpoint", str(folder), "--episodes", "1", "--sim-grounding") == 2
    assert "--sim-grounding needs a model with grounding tokens" in capsys.readouterr().err
    assert eval_cli("--checkpoint", str(folder), "--episodes", "1", "--ensemble", "0") == 2
    assert "temporal ensembling needs a model that predicts action chunks" in capsys.readouterr().err
    assert eval_cli("--resume", "--out", str(folder)) == 2
    assert "nothing to resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the wire path
@needs_shipped
@pytest.mark.parametrize("protocol", ["rest", "websocket"])
def test_eval_through_the_server_equals_in_process(protocol):
    """The shipped policy reads the robot state and predicts chunks: the client must send one and return the other.
    REST sends each step's asking envs as one batch, as in-process evaluation does; websocket sends one
    observation a frame, so it is compared with in-process batches of one."""
    from robovla.eval import CheckpointPolicy, EvalSettings, ServerPolicy, evaluate
    from robovla.serve import BackgroundServer, ServerConfig, create_app

    model = robovla.load_pretrained(SHIPPED)
    settings = EvalSettings(episodes=4, num_envs=4 if protocol == "rest" else 1, progress=False)
    local = evaluate(CheckpointPolicy(model, SHIPPED), settings)
    config = ServerConfig(max_wait_ms=0.0, restrict_to_actions=True)
    with BackgroundServer(create_app(model, config, "tabletop-fine")) as server:
        url = server.url if protocol == "rest" else f"ws://{server.host}:{server.port}"
        served = evaluate(ServerPolicy(url), settings)
    assert served["policy"]["protocol"] == protocol and served["policy"]["action_chunk"] == 4
    assert served["conditions"] == local["conditions"] and served["overall"] == local["overall"]
    assert 0 < local["overall"]["successes"]


@needs_shipped
def test_the_grounding_source_is_an_evaluation_setting():
    """--sim-grounding hands the simulator's true positions to the policy; --no-pointer lets the language model
    say them; the results record which source acted."""
    from robovla.eval import CheckpointPolicy, EvalSettings, evaluate

    model = robovla.load_pretrained(SHIPPED)
    settings = EvalSettings(episodes=2, num_envs=2, seed=7, progress=False)
    runs = {name: evaluate(CheckpointPolicy(model, SHIPPED, grounding=name), settings)
            for name in (None, "given", "tokens")}
    assert [runs[name]["policy"]["grounding"] for name in runs] == ["pointer", "simulator", "tokens"]
    assert all(run["overall"]["n"] == 2 for run in runs.values())
    with pytest.raises(robovla.RobovlaError, match="unknown grounding source 'oracle'"):
        CheckpointPolicy(model, SHIPPED, grounding="oracle")
