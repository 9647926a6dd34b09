"""Vision-language stages: the question example's layout, the Prismatic stage and RT-2 co-training, what a
checkpoint records about its data, and the bad input the issue names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import robovla
from robovla.data.vl_corpus import VLCorpusConfig, VLDataset, write_corpus
from robovla.errors import RobovlaError
from robovla.processing.processor import IGNORE_INDEX
from robovla.train import TrainConfig, train
from test_train import make_dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vl") / "corpus"
    write_corpus(out, VLCorpusConfig(scenes=4, questions_per_scene=4, image_size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def robot(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("robot") / "synthetic")


def run(out: Path, **options) -> TrainConfig:
    values = dict(out=str(out), steps=3, batch_size=4, lr=1e-3, precision="fp32", save_every=0, progress=False,
                  log_every=1, seed=3)
    values.update(options)
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------------- the example
def test_a_question_labels_only_its_answer_and_eos(corpus):
    model = robovla.build_model("tabletop-cpu")
    processor = model.processor
    item = VLDataset(corpus)[0]
    example = processor.vl_example(item["image"], item["question"], item["answer"])
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    answer = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert answer == [label for label in labels if label != IGNORE_INDEX]
    assert answer[-1] == processor.tokenizer.eos_token_id
    said = processor.tokenizer.backend.decode(answer[:-1])
    assert said.strip() == item["answer"].lower()
    prompt = processor.tokenizer.backend.decode(ids[: len(ids) - len(answer)])
    assert prompt.startswith("In: " + item["question"].lower()) and prompt.rstrip().endswith("Out:")
    assert example["pixel_values"].shape[0] == 6  # one image through both towers' normalisations


def test_every_camera_slot_shows_the_scene_and_a_state_projector_reads_zeros(corpus):
    from robovla.config import Recipe

    model = robovla.build_model("tabletop-cpu")
    model.set_recipe(Recipe(cameras=("image", "wrist_image"), proprio=True, state_tokens=1, state_dim=8))
    item = VLDataset(corpus)[1]
    example = model.processor.vl_example(item["image"], item["question"], item["answer"])
    pixels = example["pixel_values"]
    assert pixels.shape[0] == 12 and torch.equal(pixels[:6], pixels[6:])
    assert torch.equal(example["state"], torch.zeros(8))


def test_the_parallel_recipe_refuses_questions(corpus):
    from robovla.config import Recipe

    model = robovla.build_model("tabletop-cpu")
    model.set_recipe(Recipe(decoding="parallel", action_dim=7))
    with pytest.raises(RobovlaError, match="parallel-decoding recipe says actions"):
        model.processor.vl_example(np.zeros((64, 64, 3), np.uint8), "what colour is the cube?", "red")


# ------------------------------------------------------------------------------------------------ stages
def _parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "projector": {}, "llm": {}}
    for name, tensor in state.items():
        part = ("vision" if name.startswith("vision_backbone.") else "projector" if name.startswith("projector.")
                else "llm" if name.startswith("language_model.") else None)
        assert part is not None, name
        parts[part][name] = tensor
    return parts


def test_the_prismatic_stage_trains_projector_and_llm_on_answers_and_records_its_data(corpus, tmp_path):
    before = _parts(robovla.build_model("tabletop-cpu", seed=3).state_dict())
    summary = train(run(tmp_path / "pre", stage="vl-pretrain", vl_corpus=str(corpus), strategy="frozen-vision"))
    after = _parts(load_file(Path(summary.checkpoint) / "model.safetensors"))
    assert all(torch.equal(before["vision"][n], after["vision"][n]) for n in before["vision"])
    for part in ("projector", "llm"):
        assert any(not torch.equal(before[part][n], after[part][n]) for n in before[part]), part
    metrics = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert all("vl_accuracy" in m and m["action_accuracy"] == 0 for m in steps)
    config = json.loads((Path(summary.checkpoint) / "config.json").read_text())
    assert config["robovla_data_seen"] == [{"stage": "vl-pretrain", "steps": 3, "datasets": [],
                                            "vl_corpus": str(corpus), "samples": {"vision_language": 12}}]


def test_cotraining_mixes_questions_and_actions_by_weight_and_keeps_the_history(corpus, robot, tmp_path, capsys):
    first = train(run(tmp_path / "pre", stage="vl-pretrain", vl_corpus=str(corpus), steps=1))
    summary = train(run(tmp_path / "co", stage="cotrain", vl_corpus=str(corpus), datasets=[str(robot)],
                        checkpoint=first.checkpoint, batch_size=8, steps=4, weights=["vision_language=0.5"]))
    steps = [json.loads(line) for line in (tmp_path / "co" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if "loss" in m]
    assert any("vl_accuracy" in m for m in steps) and all(np.isfinite(m["loss"]) for m in steps)
    history = json.loads((Path(summary.checkpoint) / "config.json").read_text())["robovla_data_seen"]
    assert [h["stage"] for h in history] == ["vl-pretrain", "cotrain"]
    samples = history[1]["samples"]
    assert set(samples) == {"synthetic", "vision_language"} and sum(samples.values()) == 32
    # weight x size: 48 robot steps at 1.0 against 16 questions at 0.5 -> about 1 question in 7
    assert 0 < samples["vision_language"] < samples["synthetic"]
    model = robovla.load_pretrained(summary.checkpoint)
    assert set(model.config.norm_stats) == {"synthetic"}  # the questions add no action statistics
    from robovla.cli import main

    assert main(["info", summary.checkpoint]) == 0
    shown = capsys.readouterr().out
    assert "trained: vl-pretrain, 1 steps; samples drawn: vision_language 4" in shown
    assert f"trained: cotrain, 4 steps; samples drawn: synthetic {samples['synthetic']}" in shown


def test_an_actions_run_keeps_its_batches_and_records_only_robot_data(robot, tmp_path):
    summary = train(run(tmp_path / "plain", datasets=[str(robot)]))
    config = json.loads((Path(summary.checkpoint) / "config.json").read_text())
    assert config["robovla_data_seen"] == [{"stage": "actions", "steps": 3, "datasets": [str(robot)],
                                            "vl_corpus": None, "samples": {"synthetic": 12}}]


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("options", "message"), [
    ({"stage": "cotrain"}, "needs a vision-language dataset: pass --vl-corpus"),
    ({"stage": "vl-pretrain"}, "needs a vision-language dataset"),
    ({"vl_corpus": "x"}, "--vl-corpus is read by --stage vl-pretrain or cotrain"),
    ({"stage": "vl-pretrain", "vl_corpus": "x", "datasets": ["d"]}, "drop --datasets"),
    ({"stage": "cotrain", "vl_corpus": "x", "policy": "diffusion"}, "no language model"),
    ({"stage": "cotrain", "vl_corpus": "x", "decoding": "parallel"}, "parallel-decoding recipe"),
    ({"stage": "pretrain"}, "unknown stage 'pretrain'"),
    ({"weights": ["vision_language=-1"]}, "must be a finite number >= 0"),
    ({"weights": ["vision_language"]}, "expected NAME=WEIGHT"),
    ({"weights": ["a=1", "a=2"]}, "names 'a' twice"),
])
def test_bad_stage_and_weight_options_are_refused(options, message):
    with pytest.raises(RobovlaError, match=message):
        TrainConfig(**options)


def test_a_weight_or_mixture_naming_an_unknown_dataset_is_refused(corpus, robot, tmp_path):
    with pytest.raises(RobovlaError, match="unknown dataset 'bridge'.*synthetic, vision_language"):
        train(run(tmp_path / "a", stage="cotrain", vl_corpus=str(corpus), datasets=[str(robot)],
                  weights=["bridge=1"]))
    with pytest.raises(RobovlaError, match="mixture 'tabletop' needs datasets not given"):
        train(run(tmp_path / "b", datasets=[str(robot)], mixture="tabletop"))
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("*.safetensors"))


def test_a_corpus_outside_the_tokenizer_names_the_words(corpus, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    table = pq.read_table(bad / "corpus.parquet")
    questions = table.column("question").to_pylist()
    questions[0] = "how many zebras are there?"
    pq.write_table(table.set_column(table.column_names.index("question"), "question", pa.array(questions)),
                   bad / "corpus.parquet")
    with pytest.raises(RobovlaError, match="word.*: zebras"):
        train(run(tmp_path / "out", stage="vl-pretrain", vl_corpus=str(bad)))
    with pytest.raises(RobovlaError, match="not a vision-language corpus"):
        train(run(tmp_path / "out", stage="vl-pretrain", vl_corpus=str(tmp_path)))
