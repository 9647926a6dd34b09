"""Instruction noise: words a policy cannot read, added around training instructions so it learns to pass them over.

The tabletop models' small tokenizer spells a word it lacks letter by letter. A policy that never met such
spellings in training is thrown by the first polite word or end mark it has not seen: the narrow arm succeeds in
3/50 polite rewrites of its own training suite (docs/generalist.md). With noise, a share of the robot-data
instructions gets one or two filler words (everyday ones and made-up ones) before or after it, sometimes set off by
a comma or closed by a mark. No filler is a word of an evaluation rewrite family, a paraphrase, a suite template,
a synonym, a colour or the miniature world's other words (the tests check against the tokenizer's whole words), so
the rewrites stay unseen. What the policy learns is that letters it cannot read carry no task; that is also its
limit, since an unknown word that matters ("don't") is passed over too.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from robovla.errors import RobovlaError

# everyday words a person might add around an instruction; none of them is a word of the evaluation families
FILLERS = ("okay", "alright", "hey", "so", "then", "just", "gently", "carefully", "quickly", "slowly", "again",
           "also", "first", "today", "buddy", "um", "uh", "hmm", "oh", "yes", "sure", "great", "fine", "well",
           "friend", "maybe", "quietly", "whenever", "soon", "honestly", "anyway")
MARKS = (".", ";", ":")  # end marks; "!", "?" and "..." belong to the evaluation families
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class InstructionNoise:
    """How often and how much: `share` of instructions get 1 to `max_words` fillers; each filler is made up
    (random letters) with probability `made_up`, else one of `FILLERS`."""

    share: float = 0.5
    max_words: int = 2
    made_up: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise RobovlaError(f"instruction noise share must be in [0, 1], got {self.share}")
        if self.max_words < 1:
            raise RobovlaError(f"instruction noise max_words must be >= 1, got {self.max_words}")
        if not 0.0 <= self.made_up <= 1.0:
            raise RobovlaError(f"instruction noise made_up must be in [0, 1], got {self.made_up}")

    def __call__(self, instruction: str, rng: np.random.Generator) -> str:
        """`instruction` as it is, or with fillers around it (every draw from `rng`, so a seeded call repeats)."""
        if self.share == 0.0 or rng.random() >= self.share:
            return instruction
        text = instruction
        for _ in range(int(rng.integers(1, self.max_words + 1))):
            word = self._word(rng)
            if rng.random() < 0.5:
                text = f"{word}{',' if rng.random() < 0.3 else ''} {text}"
            else:
                text = f"{text}{',' if rng.random() < 0.3 else ''} {word}"
        if rng.random() < 0.3:
            text += MARKS[int(rng.integers(len(MARKS)))]
        return text

    def _word(self, rng: np.random.Generator) -> str:
        if rng.random() < self.made_up:
            while True:  # a made-up word that is no real word of the world or the held-out rewrites
                word = "".join(LETTERS[i] for i in rng.integers(len(LETTERS), size=int(rng.integers(4, 9))))
                if word not in reserved_words():
                    return word
        return FILLERS[int(rng.integers(len(FILLERS)))]


@functools.cache
def reserved_words() -> frozenset[str]:
    """Words noise never adds: the suites' templates (held-out phrasings too), the paraphrases, the evaluation
    rewrite families' frames and synonyms, the training rewrites, the prompts, colours, shapes, sizes and grid
    cells."""
    from robovla.data.vl_corpus import COLUMNS, NUMBERS, ROWS, SHAPES
    from robovla.processing.text import PROMPT_TEMPLATE, VL_PROMPT_TEMPLATE
    from robovla.sim import rewrites, tasks, variations

    texts = [PROMPT_TEMPLATE, VL_PROMPT_TEMPLATE, "in", "at", "by"]
    texts += [t for family in tasks.TEMPLATES.values() for t in family.values()]
    texts += [t for family in tasks.PARAPHRASES.values() for t in family]
    texts += list(rewrites.POLITE + rewrites.PUNCTUATION)
    texts += [f for frames in rewrites.TRAIN_REWRITES.values() for f in frames]
    for table in (rewrites.NOUN_SYNONYMS, rewrites.PLURAL_SYNONYMS, rewrites.VERB_SYNONYMS, tasks.NOUNS):
        texts += list(table) + list(table.values())
    texts += list(variations.COLORS) + list(SHAPES) + list(COLUMNS) + list(ROWS) + list(NUMBERS)
    texts += ["small", "large", "big", "medium", "tiny", "zero"]
    return frozenset(w for text in texts for w in re.findall(r"[a-z]+", text.lower()))
