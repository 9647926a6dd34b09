"""A vision-language corpus in miniature: simulator scenes with captions and questions about a wider world.

OpenVLA starts from a vision-language model that learnt colours, shapes and places from web images. This is that
corpus for the tabletop: scenes with every colour word (the semantic suite's held-out ones too, as the web would
have them), every shape (ball and disc too) and three sizes, on randomized tables and lights that stay clear of
the visual suite's held-out ones (`robovla.sim.randomization`). Each scene is rendered by the tabletop env and
asked several questions, each answer computed from the simulator's state after the scene settled:

- caption: the objects and containers, left to right;
- colour: "what colour is the cube?" (a unique shape), or of the thing left / right of a container;
- shape, size: of the thing of a colour;
- cell: which of the 4 x 3 grid cells holds a thing ("back far left"), seen from the default front camera;
- count: how many things of a shape there are, and in all.

Every question about one thing (colour, shape, size, cell) also records where that thing is on the table (`x`,
`y` in metres, the simulator's), so the corpus doubles as referring-expression data: "where is the orange
cylinder?" with the place it names, the part RefCOCO plays in Prismatic's mixture. `robovla fit-pointer
--vl-corpus` fits the grounding pointer on those too.

A share of the questions (`SYNONYM_SHARE`) name shapes and containers by common synonyms ("block", "dish"), as
web text would: the robot data never does, so a policy that follows "the red block" learnt the word here.

The words are ones the tabletop tokenizer holds (it has no "j" or "z": "thing", not "object"; "how big", not
"size"), which `check_vocabulary` enforces.

Each kind has several phrasings. `robovla collect-vl` writes the corpus as a dataset folder (`corpus.parquet`:
scene, question, answer, kind, concepts, x, y (NaN where the question is about no one thing); `images.parquet`:
each scene's PNG; `card.json` and `README.md`: counts per kind and per concept).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from robovla.errors import RobovlaError
from robovla.sim.rewrites import NOUN_SYNONYMS, PLURAL_SYNONYMS

SCHEMA = "robovla.vl-corpus/1"
COLUMNS = ("far left", "left", "right", "far right")  # the motion grid's x cells, left to right in the front view
ROWS = ("front", "middle", "back")  # its y cells, near to far
SHAPES = ("cube", "cylinder", "ball", "disc")
SIZE_RANGE = (0.045, 0.075)  # every size the suites use, held-out ones included
NUMBERS = ("none", "one", "two", "three", "four", "five")  # "zero": the small tokenizer has no "z"
KINDS = ("caption", "colour", "shape", "size", "cell", "count")
SYNONYM_SHARE = 0.3  # questions worded with common synonyms of the nouns ("block" for cube): robovla.sim.rewrites
SYNONYMS = {**NOUN_SYNONYMS, **PLURAL_SYNONYMS}

PHRASINGS: dict[str, tuple[str, ...]] = {
    "caption": ("describe the scene.", "what is on the table?", "list the things on the table from left to right."),
    "colour": ("what colour is the {thing}?", "which colour does the {thing} have?", "the {thing} is what colour?"),
    "shape": ("what shape is the {colour} thing?", "what is the {colour} thing?",
              "which shape does the {colour} thing have?"),
    "size": ("how big is the {colour} {shape}?", "is the {colour} {shape} small, medium or large?",
             "how large is the {colour} {shape}?"),
    "cell": ("which cell holds the {colour} {shape}?", "where is the {colour} {shape}?",
             "in which part of the table is the {colour} {shape}?"),
    "count": ("how many {what} are there?", "count the {what}.", "what is the number of {what}?"),
}


@dataclass(frozen=True)
class VLExample:
    kind: str
    question: str
    answer: str
    concepts: tuple[str, ...]  # the words the answer turns on ("orange", "ball", "large", "back left", "three")
    where: tuple[float, float] | None = None  # the table position (m) of the one thing the question is about


def size_word(size: float) -> str:
    return "small" if size < 0.052 else "large" if size > 0.068 else "medium"


def cell_name(x: float, y: float) -> str:
    from robovla.sim.variations import cell_of

    i, j = cell_of(x, y)
    return f"{ROWS[j]} {COLUMNS[i]}"


def plural(shape: str) -> str:
    return {"ball": "balls", "disc": "discs", "cube": "cubes", "cylinder": "cylinders"}[shape]


def sample_vl_scene(rng: np.random.Generator):
    """A scene of 2-5 objects and 0-2 containers or pads, every colour, shape and size allowed (colours distinct,
    so a colour names one thing), on a randomized table and light."""
    from robovla.sim import variations as V
    from robovla.sim.randomization import draw_look
    from robovla.sim.tasks import EpisodeSpec, FixtureSpec, ObjectSpec

    for _ in range(100):
        colours = list(rng.permutation(list(V.COLORS)))
        n_objects, n_fixtures = int(rng.integers(2, 6)), int(rng.integers(0, 3))
        taken: list[tuple[float, float, float]] = []

        def place(clearance: float) -> tuple[float, float] | None:
            for _ in range(60):
                x = float(rng.uniform(V.WORKSPACE_X[0] + 0.01, V.WORKSPACE_X[1] - 0.01))
                y = float(rng.uniform(V.WORKSPACE_Y[0] + 0.01, V.WORKSPACE_Y[1] - 0.01))
                if all(math.hypot(x - tx, y - ty) >= max(clearance, tc) for tx, ty, tc in taken):
                    taken.append((x, y, clearance))
                    return x, y
            return None

        fixtures = []
        for k in range(n_fixtures):
            point = place(0.15)
            if point is None:
                break
            fixtures.append(FixtureSpec(f"fix{k}", str(rng.choice(["bowl", "plate", "bin", "pad"])), colours.pop(),
                                        *point))
        objects = []
        for k in range(n_objects):
            point = place(0.09)
            if point is None:
                break
            objects.append(ObjectSpec(f"obj{k}", str(rng.choice(SHAPES)), colours.pop(),
                                      float(rng.uniform(*SIZE_RANGE)), *point,
                                      math.radians(float(rng.uniform(-45, 45)))))
        if len(objects) == n_objects and len(fixtures) == n_fixtures:
            goal = fixtures[0].name if fixtures else objects[-1].name
            return EpisodeSpec("pick_place", tuple(objects), tuple(fixtures), goal, "", "train-0", "beige",
                               "overhead", look=draw_look(rng, V.DIVERSE))
    raise RobovlaError("could not place a vision-language scene in 100 tries")


def scene_state(env) -> dict[str, list[dict[str, Any]]]:
    """What the questions are about, read from the simulator after the scene settled: each object's colour,
    shape, size and position, and each container's or pad's."""
    spec = env.episode
    objects = []
    for obj in spec.objects:
        x, y, _ = env.object_pos(obj.name)
        objects.append({"colour": obj.color, "shape": obj.shape, "size": obj.size, "x": float(x), "y": float(y)})
    fixtures = [{"colour": f.color, "kind": f.kind, "x": f.x, "y": f.y} for f in spec.fixtures]
    return {"objects": objects, "fixtures": fixtures}


def _noun(fixture: dict[str, Any]) -> str:
    from robovla.sim.tasks import NOUNS

    return NOUNS[fixture["kind"]]


def questions(state: dict[str, list[dict[str, Any]]], rng: np.random.Generator, per_scene: int) -> list[VLExample]:
    """Up to `per_scene` questions about one scene (kinds in turn, phrasings drawn), each with its answer."""
    objects, fixtures = state["objects"], state["fixtures"]
    candidates: dict[str, list[VLExample]] = {kind: [] for kind in KINDS}

    def ask(kind: str, answer: str, concepts: tuple[str, ...], about: dict[str, Any] | None = None,
            **slots: str) -> None:
        question = str(rng.choice(PHRASINGS[kind])).format(**slots)
        if rng.random() < SYNONYM_SHARE:
            question, answer = with_synonyms(question), with_synonyms(answer)
            # sorted: a set's order changes with the process's hash seed, and the corpus must not
            concepts = concepts + tuple(sorted(text_words((question, answer)) & set(SYNONYMS.values())))
        where = (about["x"], about["y"]) if about is not None else None
        candidates[kind].append(VLExample(kind, question, answer, concepts, where))

    things = sorted([*({"phrase": f"{o['colour']} {o['shape']}", "x": o["x"]} for o in objects),
                     *({"phrase": f"{f['colour']} {_noun(f)}", "x": f["x"]} for f in fixtures)], key=lambda t: t["x"])
    phrases = [f"a {t['phrase']}" for t in things]
    caption = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    ask("caption", caption, tuple(word for t in things for word in t["phrase"].split()))
    shape_counts = Counter(o["shape"] for o in objects)
    for o in objects:
        if shape_counts[o["shape"]] == 1:
            ask("colour", o["colour"], (o["colour"],), o, thing=o["shape"])
        ask("shape", o["shape"], (o["shape"],), o, colour=o["colour"])
        ask("size", size_word(o["size"]), (size_word(o["size"]),), o, colour=o["colour"], shape=o["shape"])
        cell = cell_name(o["x"], o["y"])
        ask("cell", cell, (cell,), o, colour=o["colour"], shape=o["shape"])
    for f in fixtures:  # "the object left of the bowl": only where exactly one object is on that side
        for side, sign in (("left", -1), ("right", 1)):
            beside = [o for o in objects if sign * (o["x"] - f["x"]) > 0.03]
            if len(beside) == 1:
                ask("colour", beside[0]["colour"], (beside[0]["colour"], side), beside[0],
                    thing=f"thing {side} of the {f['colour']} {_noun(f)}")
    for shape in SHAPES:
        n = shape_counts[shape]
        ask("count", NUMBERS[n], (NUMBERS[n],), what=plural(shape))
    ask("count", NUMBERS[len(objects)], (NUMBERS[len(objects)],), what="things on the table")
    chosen: list[VLExample] = []
    pools = {kind: list(rng.permutation(len(items))) for kind, items in candidates.items()}
    while len(chosen) < per_scene and any(pools.values()):
        for kind in KINDS:
            if pools[kind] and len(chosen) < per_scene:
                chosen.append(candidates[kind][int(pools[kind].pop())])
    return chosen


def with_synonyms(text: str) -> str:
    """`text` with every shape and container noun replaced by its common synonym (cube -> block, bowl -> dish)."""
    return re.sub(r"[a-z]+", lambda m: SYNONYMS.get(m.group(0), m.group(0)), text)


def text_words(texts: Iterable[str]) -> set[str]:
    """Every word of `texts` (lower case, punctuation stripped)."""
    words = {w.strip(".,?!") for text in texts for w in text.lower().split()}
    return {w for w in words if w}


def corpus_words(examples: list[VLExample]) -> set[str]:
    """Every word of the corpus's questions and answers."""
    return text_words(text for example in examples for text in (example.question, example.answer))


def words_outside(tokenizer: Any, words: set[str]) -> list[str]:
    """The words a tokenizer can only spell byte by byte (its vocabulary does not hold them)."""
    tokenizer = getattr(tokenizer, "backend", tokenizer)  # a robovla TextTokenizer, or tokenizers' own
    missing = []
    for word in sorted(words):
        pieces = tokenizer.encode(" " + word, add_special_tokens=False).tokens
        if any(p.startswith("<0x") for p in pieces):
            missing.append(word)
    return missing


def check_vocabulary(tokenizer: Any, words: set[str]) -> None:
    """A corpus must be written in words the model's tokenizer holds; name the ones it does not."""
    missing = words_outside(tokenizer, words)
    if missing:
        raise RobovlaError(f"the vision-language corpus uses {len(missing)} word(s) the tokenizer spells byte by "
                           f"byte: {', '.join(missing)}; rephrase them or train the tokenizer on the corpus")


@dataclass
class VLCorpusConfig:
    scenes: int = 500
    questions_per_scene: int = 6
    image_size: int = 128
    seed: int = 0
    embodiment: str = "default"  # whose front camera renders the scenes (the cell words assume its view)


def generate(config: VLCorpusConfig, progress: bool = True) -> tuple[list[np.ndarray], list[VLExample], list[int]]:
    """Render `config.scenes` scenes and ask each its questions: (images, examples, scene index per example)."""
    from tqdm import tqdm

    from robovla.sim import make_env

    if config.scenes < 1 or config.questions_per_scene < 1:
        raise RobovlaError(f"scenes and questions_per_scene must be >= 1, got {config.scenes} and "
                           f"{config.questions_per_scene}")
    env = make_env("tabletop-train", embodiment=config.embodiment, image_size=config.image_size)
    images, examples, owners = [], [], []
    try:
        for scene in tqdm(range(config.scenes), desc="vision-language scenes", disable=not progress):
            rng = np.random.default_rng([config.seed, scene])
            obs, _ = env.reset(options={"episode": sample_vl_scene(rng)})
            images.append(obs["image"])
            for example in questions(scene_state(env), rng, config.questions_per_scene):
                examples.append(example)
                owners.append(scene)
    finally:
        env.close()
    return images, examples, owners


def card(examples: list[VLExample], config: VLCorpusConfig, scenes: int) -> dict[str, Any]:
    """Counts per question kind and per concept (the words answers turn on)."""
    return {"schema": SCHEMA, "scenes": scenes, "examples": len(examples), "settings": vars(config),
            "kinds": dict(Counter(e.kind for e in examples)),
            "referring": sum(e.where is not None for e in examples),  # questions that say where their thing is
            "concepts": dict(sorted(Counter(c for e in examples for c in e.concepts).items()))}


def write_corpus(out: Path, config: VLCorpusConfig, tokenizer: Any | None = None, progress: bool = True) -> dict:
    """Generate and write the corpus folder atomically; refuses words outside `tokenizer`'s vocabulary."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from robovla.files import write_atomic, write_folder_atomic

    images, examples, owners = generate(config, progress)
    if tokenizer is not None:
        check_vocabulary(tokenizer, corpus_words(examples))
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    table = pa.table({"scene": owners, "question": [e.question for e in examples],
                      "answer": [e.answer for e in examples], "kind": [e.kind for e in examples],
                      "concepts": [list(e.concepts) for e in examples],
                      "x": [e.where[0] if e.where else math.nan for e in examples],
                      "y": [e.where[1] if e.where else math.nan for e in examples]})
    scenes = pa.table({"scene": list(range(len(images))), "image": encoded})
    summary = card(examples, config, len(images))

    def fill(folder: Path) -> None:
        pq.write_table(table, folder / "corpus.parquet")
        pq.write_table(scenes, folder / "images.parquet")
        write_atomic(folder / "card.json", json.dumps(summary, indent=2))
        write_atomic(folder / "README.md", card_markdown(summary))

    write_folder_atomic(out, fill)
    return summary


def card_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Vision-language corpus (robovla collect-vl)", "",
             f"{summary['examples']} questions about {summary['scenes']} rendered tabletop scenes "
             f"({summary['settings']['image_size']} px, seed {summary['settings']['seed']}). Answers come from the "
             "simulator's state. The corpus names every colour (the semantic suite's held-out words too), shape "
             "and size; its tables and lights stay clear of the visual suite's held-out ones.", "",
             "| kind | examples |", "|---|---|", *[f"| {k} | {n} |" for k, n in summary["kinds"].items()], "",
             f"{summary['referring']} questions are about one thing and record where it is (referring-expression "
             "data for `robovla fit-pointer --vl-corpus`).", "",
             "| concept | examples |", "|---|---|", *[f"| {c} | {n} |" for c, n in summary["concepts"].items()]]
    return "\n".join(lines) + "\n"


def read_corpus(folder: str | Path) -> tuple[Any, Any]:
    """The corpus's question table and its scene-image table (pyarrow), after checking the folder is one."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    names = ("card.json", "corpus.parquet", "images.parquet")
    if not all((folder / name).is_file() for name in names):
        raise RobovlaError(f"{folder} is not a vision-language corpus (robovla collect-vl writes "
                           f"{', '.join(names)})")
    if json.loads((folder / "card.json").read_text()).get("schema") != SCHEMA:
        raise RobovlaError(f"{folder}/card.json: not a {SCHEMA} corpus")
    return pq.read_table(folder / "corpus.parquet"), pq.read_table(folder / "images.parquet")


VL_DATASET_NAME = "vision_language"  # the corpus's name in a mixture's weights


class VLDataset:
    """A corpus folder as training items: {"image": uint8 HxWx3, "question", "answer"} per question, and
    `where` [N, 2]: the table position of the thing each question is about (NaN where none).

    Scene images stay PNG-encoded in memory and are decoded per item (a corpus of a few thousand scenes is a few
    tens of MB encoded)."""

    dataset_name = VL_DATASET_NAME

    def __init__(self, folder: str | Path) -> None:
        corpus, scenes = read_corpus(folder)
        self.folder = Path(folder)
        self.questions = corpus.column("question").to_pylist()
        self.answers = corpus.column("answer").to_pylist()
        self.scene = np.asarray(corpus.column("scene").to_pylist(), dtype=np.int64)
        self.where = np.full((len(self.questions), 2), np.nan)
        if "x" in corpus.column_names:  # corpora written before positions were recorded have none
            self.where = np.stack([corpus.column("x").to_numpy(), corpus.column("y").to_numpy()], axis=1)
        encoded = dict(zip(scenes.column("scene").to_pylist(), scenes.column("image").to_pylist()))
        missing = sorted(set(self.scene.tolist()) - set(encoded))
        if missing:
            raise RobovlaError(f"{folder}: questions about scenes with no image: {missing[:5]}")
        self._png = encoded

    def __len__(self) -> int:
        return len(self.questions)

    def image(self, scene: int) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self._png[scene])).convert("RGB"))

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.image(int(self.scene[i]))
        return {"image": image, "question": self.questions[i], "answer": self.answers[i],
                "dataset_name": VL_DATASET_NAME}

    def words(self) -> set[str]:
        return text_words(self.questions + self.answers)
