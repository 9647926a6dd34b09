"""Instruction rewrites: each held-out family rewrites only the words, training rewrites never use its words."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robovla.errors import RobovlaError
from robovla.sim.rewrites import (NOUN_SYNONYMS, PLURAL_SYNONYMS, POLITE, PUNCTUATION, REWRITE_FAMILIES,
                                  VERB_SYNONYMS, augmented, rewritten)
from robovla.sim.tasks import PARAPHRASES, TEMPLATES, sample_episode
from robovla.sim.variations import get_suite

SYNONYM_WORDS = set(NOUN_SYNONYMS.values()) | set(PLURAL_SYNONYMS.values()) | set(VERB_SYNONYMS.values())


def episodes(suite: str, n: int = 200):
    return [sample_episode(np.random.default_rng(seed), get_suite(suite)) for seed in range(n)]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.mark.parametrize("family", REWRITE_FAMILIES)
def test_each_family_rewrites_the_words_and_keeps_the_task(family):
    rng = np.random.default_rng(0)
    for spec in episodes("tabletop-train", 60):
        new = rewritten(spec, family, rng)
        assert new.instruction != spec.instruction and new.phrasing == family
        assert (new.objects, new.fixtures, new.goal, new.family) == (spec.objects, spec.fixtures, spec.goal, spec.family)
        if family == "synonym":  # every noun and the verb said another way, the colours kept
            assert not words(new.instruction) & (set(NOUN_SYNONYMS) | set(VERB_SYNONYMS))
            assert spec.target.color in new.instruction
        elif family == "order":  # the same words, the goal first
            assert sorted(words(new.instruction)) == sorted(words(spec.instruction))
            assert new.instruction.startswith(("in ", "on ", "onto ", "to ", "next ", "near ", "on top "))
        else:  # the trained instruction inside a frame or with marks
            assert spec.instruction in new.instruction.lower()


def test_training_rewrites_never_use_a_held_out_familys_words_or_frames():
    template_words = {w for family in TEMPLATES.values() for t in family.values() for w in words(t)}
    held_out_frames = {w for frame in POLITE + PUNCTUATION for w in words(frame.lower())} - template_words - {"instruction"}
    assert held_out_frames == {"could", "you", "would", "kindly", "thank", "i", "need"}
    paraphrase_words = {w for family in PARAPHRASES.values() for t in family for w in words(t)} - template_words
    held_out_frames |= paraphrase_words - {"it", "and", "is", "be"}  # the paraphrase condition stays unseen too
    rng = np.random.default_rng(1)
    seen = set()
    for suite in ("tabletop-train", "tabletop-diverse"):
        for spec in episodes(suite):
            text = augmented(spec, rng).instruction
            seen.add(text)
            assert not words(text) & SYNONYM_WORDS, text
            assert not words(text) & held_out_frames, text
            assert "!" not in text and "..." not in text, text
            assert not re.match(r"(in|on|onto|to|next|near) ", text), text  # the goal never comes first
    assert sum(t != s.instruction for t, s in zip(seen, episodes("tabletop-train"))) > 0
    rewrites = [augmented(spec, np.random.default_rng(k)).instruction for k, spec in enumerate(episodes("tabletop-train", 40))]
    plain = [spec.instruction for spec in episodes("tabletop-train", 40)]
    assert 8 <= sum(a != b for a, b in zip(rewrites, plain)) <= 32  # about half the episodes


def test_no_suite_template_or_paraphrase_names_a_synonym():
    texts = [t for family in TEMPLATES.values() for t in family.values()]
    texts += [t for family in PARAPHRASES.values() for t in family]
    assert not any(words(t) & SYNONYM_WORDS for t in texts)


def test_conditions_name_the_families_and_collections_refuse_them(tmp_path):
    from robovla.data.collection import CollectConfig, collect
    from robovla.eval.harness import expand_conditions, split_condition

    assert split_condition("tabletop-train:polite") == ("tabletop-train", "polite")
    assert expand_conditions(["tabletop-train"], "synonym") == ("tabletop-train:synonym",)
    with pytest.raises(RobovlaError, match="unknown instruction set 'augmented'"):
        split_condition("tabletop-train:augmented")
    with pytest.raises(RobovlaError, match="held out for evaluation"):
        collect(CollectConfig(episodes=1, instructions="polite"), tmp_path / "x", workers=1, progress=False)


def test_an_augmented_collection_records_rewritten_instructions(tmp_path):
    import json

    from robovla.data import open_dataset
    from robovla.data.collection import CollectConfig, collect

    out = tmp_path / "demos"
    collect(CollectConfig(episodes=6, image_size=32, seed=4, instructions="augmented", max_frames=2), out,
            workers=1, progress=False)
    assert json.loads((out / "meta" / "info.json").read_text())["robovla"]["instructions"] == "augmented"
    dataset = open_dataset(out)
    texts = set(dataset.instructions)
    templates = [re.escape(t).replace(r"\{target\}", ".+").replace(r"\{goal\}", ".+").replace(r"\{prep\}", ".+")
                 for family in TEMPLATES.values() for t in family.values()]
    assert any(not any(re.fullmatch(p, text) for p in templates) for text in texts)  # some were rewritten
