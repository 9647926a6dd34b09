"""Instructions a person reads as the same instruction: the rewrite families evaluation holds out, and the
disjoint rewrites a training collection may use.

Evaluation (`robovla eval --suite tabletop-train:polite`, ...) rewrites the episode's trained phrasing in one
family at a time, so each family's success can be set against the trained phrasings' on the same seeds:

- `punctuation`: capitals and end marks ("Put the red cube in the green bowl!");
- `polite`: a polite frame ("could you ... ?", "... , thank you");
- `synonym`: common synonyms for the objects' nouns and the verb ("lay the red block in the green dish");
- `order`: the goal first, the trained words kept ("in the green bowl, put the red cube").

A training collection with `instructions="augmented"` rewrites half its episodes with `TRAIN_REWRITES`: other end
marks, other polite words, the target first. No training rewrite uses an evaluation family's words or frames, nor
the words of `tasks.PARAPHRASES` (the tests check), and no robot data ever names the synonyms: a policy can only know "block" from the
vision-language corpus, which names shapes and containers by these synonyms too, as web text would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robovla.sim.tasks import EpisodeSpec

REWRITE_FAMILIES = ("punctuation", "polite", "synonym", "order")
AUGMENTED = "augmented"  # a collection's instruction set: half the episodes under a training rewrite

# nouns as `tasks.NOUNS` says them -> a common synonym; verbs of the trained templates -> a common synonym
NOUN_SYNONYMS = {"cube": "block", "cylinder": "tube", "ball": "sphere", "disc": "puck", "bowl": "dish",
                 "plate": "tray", "bin": "box", "square": "mat"}
PLURAL_SYNONYMS = {"cubes": "blocks", "cylinders": "tubes", "balls": "spheres", "discs": "pucks"}
VERB_SYNONYMS = {"put": "lay", "place": "position", "stack": "pile", "move": "carry", "push": "shift",
                 "slide": "glide"}
PUNCTUATION = ("{Instruction}!", "{Instruction}...", "{INSTRUCTION}!")
POLITE = ("could you {instruction}?", "would you kindly {instruction}?", "{instruction}, thank you",
          "i need you to {instruction}")
TRAIN_REWRITES = {
    "punctuation": ("{Instruction}.",),
    "polite": ("go ahead and {instruction}", "{instruction} now", "{instruction} for me"),
    "order": ("the {target}: {instruction_it}",),  # the target first, then the instruction about "it"
}


def _template(spec: "EpisodeSpec") -> str:
    from robovla.sim.tasks import TEMPLATES

    return TEMPLATES[spec.family][spec.phrasing]


def _slots(spec: "EpisodeSpec") -> dict[str, str]:
    from robovla.sim.tasks import preposition

    goal = spec.entity(spec.goal)
    return {"target": spec.target.phrase, "goal": goal.phrase, "prep": preposition(goal)}


def _framed(frame: str, instruction: str, **slots: str) -> str:
    return frame.format(instruction=instruction, Instruction=instruction[:1].upper() + instruction[1:],
                        INSTRUCTION=instruction.upper(), **slots)


def _synonyms(text: str) -> str:
    words = text.split(" ")
    words[0] = VERB_SYNONYMS.get(words[0], words[0])
    return " ".join(NOUN_SYNONYMS.get(word, word) for word in words)


def rewritten(spec: "EpisodeSpec", family: str, rng: np.random.Generator) -> "EpisodeSpec":
    """`spec` with its instruction rewritten in one held-out family (same scene, same task, same meaning)."""
    slots = _slots(spec)
    instruction = _template(spec).format(**slots)
    if family == "punctuation":
        text = _framed(PUNCTUATION[int(rng.integers(len(PUNCTUATION)))], instruction)
    elif family == "polite":
        text = _framed(POLITE[int(rng.integers(len(POLITE)))], instruction)
    elif family == "synonym":
        text = _synonyms(instruction)
    elif family == "order":  # "put the red cube in the green bowl" -> "in the green bowl, put the red cube"
        head, _, tail = instruction.partition(slots["target"])
        text = f"{tail.strip()}, {head}{slots['target']}"
    else:
        raise ValueError(f"unknown rewrite family {family!r}")
    return replace(spec, instruction=text, phrasing=family)


def augmented(spec: "EpisodeSpec", rng: np.random.Generator) -> "EpisodeSpec":
    """A training collection's instruction: the suite's own half the time, else one of `TRAIN_REWRITES`."""
    if rng.random() < 0.5:
        return spec
    family = sorted(TRAIN_REWRITES)[int(rng.integers(len(TRAIN_REWRITES)))]
    frames = TRAIN_REWRITES[family]
    frame = frames[int(rng.integers(len(frames)))]
    slots = _slots(spec)
    about_it = _template(spec).replace("the {target}", "it").format(**slots)
    return replace(spec, instruction=_framed(frame, spec.instruction, instruction_it=about_it, **slots))
