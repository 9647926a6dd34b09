"""The vision-language corpus: answers that match the simulator, words the tokenizer holds, a dataset with a card."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from robovla.data.vl_corpus import (NUMBERS, SYNONYMS, VLCorpusConfig, VLExample, check_vocabulary, corpus_words,
                                    questions, read_corpus, sample_vl_scene, scene_state, write_corpus)
from robovla.errors import RobovlaError
from robovla.sim import variations as V


def _canonical(example: VLExample) -> VLExample:
    """The example with synonyms turned back into the simulator's nouns ("block" -> "cube")."""
    back = {synonym: word for word, synonym in SYNONYMS.items()}

    def undo(text: str) -> str:
        return re.sub(r"[a-z]+", lambda m: back.get(m.group(0), m.group(0)), text)

    return VLExample(example.kind, undo(example.question), undo(example.answer), example.concepts, example.where)


def _expected_where(example: VLExample, env) -> tuple[float, float] | None:
    """Where the one thing the question is about lies, from the env alone (None: a question about no one thing)."""
    spec = env.episode
    if example.kind in ("count", "caption"):
        return None
    if example.kind == "colour" and " of the " not in example.question:
        shape = next(s for s in ("cube", "cylinder", "ball", "disc") if s in example.question)
        about = next(o for o in spec.objects if o.shape == shape)
    elif example.kind == "colour":
        about = next(o for o in spec.objects if o.color == example.answer)
    else:
        colour = next(c for c in V.COLORS if re.search(rf"\b{c}\b", example.question))
        about = next(o for o in spec.objects if o.color == colour)
    return tuple(float(v) for v in env.object_pos(about.name)[:2])


def _expected(example: VLExample, env) -> str:
    """The answer, worked out again from the env alone (the episode's objects and the simulator's positions)."""
    spec = env.episode
    objects = {o.color: (o, env.object_pos(o.name)) for o in spec.objects}
    if example.kind == "count":
        what = re.search(r"(?:how many|count the|number of) (\w+)", example.question).group(1)
        n = len(spec.objects) if what == "things" else sum(o.shape + "s" == what for o in spec.objects)
        return NUMBERS[n]
    if example.kind == "caption":
        return example.answer  # checked separately: the phrases
    colour = next((c for c in V.COLORS if re.search(rf"\b{c}\b", example.question)), None)
    if example.kind == "colour" and " of the " not in example.question:
        shape = next(s for s in ("cube", "cylinder", "ball", "disc") if s in example.question)
        return next(o.color for o in spec.objects if o.shape == shape)
    if example.kind == "colour":  # the one thing left or right of the named container
        fixture = next(f for f in spec.fixtures if f.color == colour)
        sign = -1 if " left of " in example.question else 1
        beside = [o for o in spec.objects if sign * (env.object_pos(o.name)[0] - fixture.x) > 0.03]
        assert len(beside) == 1
        return beside[0].color
    obj, position = objects[colour]
    if example.kind == "shape":
        return obj.shape
    if example.kind == "size":
        return "small" if obj.size < 0.052 else "large" if obj.size > 0.068 else "medium"
    i, j = V.cell_of(position[0], position[1])
    return f"{('front', 'middle', 'back')[j]} {('far left', 'left', 'right', 'far right')[i]}"


def test_answers_match_the_simulator_state():
    from robovla.sim import make_env

    env = make_env("tabletop-train", image_size=48)
    kinds, synonyms = set(), 0
    try:
        for scene in range(25):
            rng = np.random.default_rng([7, scene])
            env.reset(options={"episode": sample_vl_scene(rng)})
            for worded in questions(scene_state(env), rng, per_scene=8):
                synonyms += worded != _canonical(worded)
                named = [c for c in worded.concepts if c in SYNONYMS.values()]
                assert named == sorted(named)  # not a set's order, which changes with the process's hash seed
                example = _canonical(worded)
                kinds.add(example.kind)
                assert example.answer == _expected(example, env), example
                assert example.where == _expected_where(example, env), example
                if example.kind == "caption":
                    phrases = {f"{o.color} {o.shape}" for o in env.episode.objects}
                    assert all(p in example.answer for p in phrases)
    finally:
        env.close()
    assert kinds == {"caption", "colour", "shape", "size", "cell", "count"}
    assert 20 <= synonyms <= 100  # about SYNONYM_SHARE of 200 questions (nouns named by synonyms)


def test_scenes_use_every_colour_shape_and_size_but_no_heldout_table_or_light():
    from robovla.sim.randomization import heldout_violations

    rng = np.random.default_rng(0)
    colours, shapes, sizes = set(), set(), set()
    for _ in range(200):
        spec = sample_vl_scene(rng)
        assert not heldout_violations(spec.look)
        colours |= {o.color for o in spec.objects}
        shapes |= {o.shape for o in spec.objects}
        sizes |= {"small" if o.size < 0.052 else "large" if o.size > 0.068 else "medium" for o in spec.objects}
        assert len({o.color for o in spec.objects} | {f.color for f in spec.fixtures}) == \
            len(spec.objects) + len(spec.fixtures)  # a colour names one thing
    assert colours == set(V.COLORS) and shapes == {"cube", "cylinder", "ball", "disc"}
    assert sizes == {"small", "medium", "large"}


def test_words_outside_the_tokenizer_are_named():
    from tokenizers import Tokenizer

    from robovla.model.factory import packaged_tokenizer_path

    tokenizer = Tokenizer.from_file(str(packaged_tokenizer_path("tabletop-small")))
    check_vocabulary(tokenizer, corpus_words([VLExample("count", "how many cubes are there?", "three", ("three",))]))
    with pytest.raises(RobovlaError, match="2 word.*: object, zero"):
        check_vocabulary(tokenizer, corpus_words([VLExample("count", "how many object are there?", "zero", ("zero",))]))


def test_the_corpus_folder_has_its_card_and_reads_back(tmp_path):
    from robovla.cli import main

    out = tmp_path / "vl"
    assert main(["collect-vl", "--scenes", "6", "--questions-per-scene", "4", "--image-size", "32", "--out",
                 str(out), "--quiet"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["scenes"] == 6 and card["examples"] == 24 and sum(card["kinds"].values()) == 24
    assert sum(card["concepts"].values()) >= 24 and "| concept | examples |" in (out / "README.md").read_text()
    corpus, images = read_corpus(out)
    assert corpus.num_rows == 24 and images.num_rows == 6
    from robovla.data.vl_corpus import VLDataset

    where = VLDataset(out).where  # the referring questions' places, NaN for the rest
    about_one = np.isin(np.array(corpus.column("kind").to_pylist()), ["colour", "shape", "size", "cell"])
    assert card["referring"] == int(about_one.sum()) >= 1
    assert np.isfinite(where[about_one]).all() and np.isnan(where[~about_one]).all()
    assert (np.abs(where[about_one]) < 0.6).all()  # on the table, in metres
    assert set(corpus.column("scene").to_pylist()) == set(range(6))
    with pytest.raises(RobovlaError, match="not a vision-language corpus"):
        read_corpus(tmp_path)
    assert main(["collect-vl", "--scenes", "0", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert not (tmp_path / "none").exists()


def test_generation_is_seeded(tmp_path):
    config = VLCorpusConfig(scenes=3, questions_per_scene=3, image_size=32, seed=5)
    first = write_corpus(tmp_path / "a", config, progress=False)
    again = write_corpus(tmp_path / "b", config, progress=False)
    assert first == again
    assert (tmp_path / "a" / "images.parquet").read_bytes() == (tmp_path / "b" / "images.parquet").read_bytes()
