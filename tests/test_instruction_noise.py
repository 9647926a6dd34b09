"""Instruction noise: fillers around training instructions, seeded, and never a word the evaluation holds out."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robovla.data.instruction_noise import FILLERS, MARKS, InstructionNoise, reserved_words
from robovla.errors import RobovlaError
from robovla.sim.rewrites import NOUN_SYNONYMS, PLURAL_SYNONYMS, POLITE, PUNCTUATION, VERB_SYNONYMS
from robovla.sim.tasks import PARAPHRASES, TEMPLATES
from robovla.sim.variations import HELDOUT_COLORS

PLAIN = "put the red cube in the green bowl"


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def noisy(n: int = 2000, **kwargs) -> list[str]:
    noise = InstructionNoise(**kwargs)
    return [noise(PLAIN, np.random.default_rng(k)) for k in range(n)]


def test_fillers_surround_the_instruction_and_a_seed_repeats_them():
    texts = noisy(share=1.0)
    assert all(PLAIN in text and text != PLAIN for text in texts)
    assert texts == noisy(share=1.0)
    added = [text.replace(PLAIN, " ").strip() for text in texts]
    assert sum(text.startswith(PLAIN) for text in texts) > 300 and sum(text.endswith(PLAIN) for text in texts) > 300
    assert any(text.endswith(MARKS) for text in texts) and any("," in text for text in added)
    assert {w for a in added for w in words(a)} & set(FILLERS)  # everyday words and made-up ones both appear
    assert {w for a in added for w in words(a)} - set(FILLERS)


def test_share_sets_how_many_instructions_change():
    assert noisy(share=0.0) == [PLAIN] * 2000
    changed = sum(text != PLAIN for text in noisy(share=0.5))
    assert 900 <= changed <= 1100


def test_no_filler_is_a_held_out_word_a_task_word_or_a_word_the_tokenizer_knows():
    from tokenizers import Tokenizer

    from robovla.model.factory import packaged_tokenizer_path

    held_out = {w for frame in POLITE + PUNCTUATION for w in words(frame)} - {"instruction"}
    held_out |= {w for family in PARAPHRASES.values() for t in family for w in words(t)}
    held_out |= {w for family in TEMPLATES.values() for t in family.values() for w in words(t)}
    held_out |= set(NOUN_SYNONYMS.values()) | set(PLURAL_SYNONYMS.values()) | set(VERB_SYNONYMS.values())
    held_out |= set(HELDOUT_COLORS)
    assert held_out <= reserved_words()
    vocabulary = Tokenizer.from_file(str(packaged_tokenizer_path("tabletop-small"))).get_vocab()
    known = {token[1:].lower() for token in vocabulary if token.startswith("▁") and len(token) > 1}
    added = {w for text in noisy(5000, share=1.0) for w in words(text.replace(PLAIN, " "))}
    assert not added & reserved_words() and not added & known
    assert not any(mark in text for text in noisy(share=1.0) for mark in ("!", "?", "..."))


@pytest.mark.parametrize("bad", [{"share": -0.1}, {"share": 1.5}, {"max_words": 0}, {"made_up": 2.0}])
def test_out_of_range_settings_are_refused(bad):
    with pytest.raises(RobovlaError, match="instruction noise"):
        InstructionNoise(**bad)
