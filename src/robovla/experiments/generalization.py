"""`robovla experiment generalization`: OpenVLA's first claim in miniature, and what each ingredient buys.

OpenVLA says its zero-shot generalization (unseen visuals, positions, objects and words) comes from a diverse
robot mixture and a vision-language starting point. Starting from the shipped policy (trained on narrow
`tabletop-train` data; `make policy` / `make policy-gpu` produce it, and it is not counted in this experiment's
time), three arms train with the same steps, batch and schedule and differ only in their data, and each then
fits its own grounding pointer on its default-robot demonstrations, as the shipped policy did (fine-tuning leaves
the old pointer stale, and without one the shipped policy falls from 16/20 to 7/20 on its training suite):

- `narrow`: more `tabletop-train` demonstrations (one scene distribution, the suites' own phrasings);
- `diverse`: the diverse mixture: `tabletop-diverse` scenes (any flat table colour, light, jittered camera, 3-4
  objects, all clear of the held-out values) on both embodiments, half the instructions under training
  rewrites (`collect --instructions augmented`);
- `diverse-vl`: the same mixture co-trained with the vision-language corpus (`robovla collect-vl`: every colour,
  shape and size word, the shape synonyms), RT-2's recipe, weights from the `tabletop_generalist` mixture.

Every arm trains with the reference's colour jitter (brightness, contrast, saturation, hue; not its crop, since
evaluation frames are never cropped) and fits its pointer on jittered frames. On validation seeds this took the
narrow arm from 2/40 to 21/40 on the visual suite (unseen lights 9 -> 32, tables 13 -> 34), its training suite
34 -> 34 (docs/generalist.md, "Probe: colour jitter").

Each arm and the starting point run the five generalization suites and the training suite under each held-out
rewrite family (punctuation, polite, synonym, order), on official seeds with intervals. The report says per axis
what each step buys, how much each rewrite family loses against the trained phrasings, and whether the semantic
suite's colour words, which only the vision-language corpus holds, pick the named object more often than chance.
Last, the arm with the most successes on validation seeds (never the official ones) becomes the generalist, copied
to `work/generalist`. Each stage is saved when done and a rerun resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovla.errors import RobovlaError
from robovla.experiments.common import ExperimentScale, publish

NAME = "generalization"
SUITES = ("tabletop-train", "tabletop-visual", "tabletop-motion", "tabletop-physical", "tabletop-semantic")
REWRITES = tuple(f"tabletop-train:{family}" for family in ("punctuation", "polite", "synonym", "order"))
CONDITIONS = SUITES + REWRITES
SELECTION = "median"  # the shipped policy's decoding, used by every arm
COLLECT_SEEDS = {"narrow": 2301, "diverse": 2302, "diverse-sideview": 2303, "vision-language": 2304,
                 "scenes-diverse": 2305, "scenes-narrow": 2306}
# every arm: the reference's colour jitter without its crop, in training and in its pointer's frames (a work folder
# made without it refuses to resume under it: the flag is one of the run's settings)
COLOUR_JITTER = True
POINTER_INSTRUCTIONS = 3  # each pointer scene under this many instructions (the shipped pointer's recipe)


@dataclass(frozen=True)
class GeneralizationArm:
    name: str
    label: str
    data: tuple[str, ...]  # demonstration folders under work/demos
    mixture: str | None  # robovla.data.mixtures.MIXTURES: the weights, in one place
    vision_language: bool = False  # co-trained with the corpus (stage cotrain)


ARMS = (
    GeneralizationArm("narrow", "narrow data: tabletop-train demonstrations", ("narrow",), None),
    GeneralizationArm("diverse", "the diverse mixture: randomized scenes, both robots, rewritten instructions",
                      ("diverse", "diverse-sideview"), "tabletop"),
    GeneralizationArm("diverse-vl", "the diverse mixture co-trained with the vision-language corpus (RT-2)",
                      ("diverse", "diverse-sideview"), "tabletop_generalist", vision_language=True),
)


@dataclass(frozen=True)
class GeneralizationScale(ExperimentScale):
    sideview_demos: int = 200  # demonstrations of the second embodiment in the diverse mixture
    vl_scenes: int = 2000  # vision-language corpus scenes (6 questions each)
    batch_size: int = 32  # fine-tuning batch of every arm
    pointer_steps: int = 3000  # grounding-pointer training steps (on cached features: minutes)
    pointer_scenes: int = 3000  # first frames of extra scenes for each pointer (the binding needs many scenes)
    pointer_stride: int = 8  # every k-th frame of the arm's demonstrations goes into its pointer's cache
    pointer_vl_questions: int = 8000  # referring questions from the corpus in the vision-language arm's pointer
    pointer_vl_holdout_scenes: int = 100  # corpus scenes kept out of that pointer's fit, for its reported accuracy


SCALES = {
    # full: 1600 demonstrations per arm's robot data (the diverse arm's: 1200 + 400 on the sideview robot; about 2 min
    # to collect), 2000 corpus scenes, 750 fine-tuning steps of batch 16 per arm (1.1 s each on a 2-core machine at
    # 190 GFLOP/s: well under one pass over the frames, so more demonstrations mean more distinct scenes, not more
    # compute), 600 pointer steps from the starting point's pointer, 50 episodes per condition. Batch 32 with 2000
    # pointer steps from random weights on every 8th frame took 180 min, over the 2 hours (docs/generalist.md)
    "full": GeneralizationScale(demos=1600, steps=750, episodes=50, timing_calls=0, sideview_demos=400,
                                vl_scenes=2000, batch_size=16, pointer_steps=600, pointer_scenes=3000,
                                pointer_stride=16, pointer_vl_questions=8000, pointer_vl_holdout_scenes=100),
    # quick: the whole pipeline in minutes, for trying it out and for tests (its numbers mean nothing)
    "quick": GeneralizationScale(demos=3, steps=2, episodes=2, timing_calls=0, sideview_demos=2, vl_scenes=3,
                                 pointer_steps=2, pointer_scenes=2, pointer_stride=8, pointer_vl_questions=20,
                                 pointer_vl_holdout_scenes=1),
}


@dataclass
class GeneralizationSettings:
    scale: str = "full"
    work: Path = Path("runs/generalization")  # demonstrations, corpus, training runs, episode logs (git-ignored)
    out: Path = Path("results/generalization")  # results.json, report.md, plots (committed)
    workers: int = 1  # processes stepping the evaluation envs


def starting_point() -> Path:
    from robovla.demo import shipped_policy_path

    return shipped_policy_path()


def shown_path(path: Path) -> Path:
    """`path` relative to the working folder where it lies inside it (reports stay free of machine paths)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def train_config(arm: GeneralizationArm, demos: dict[str, Path], corpus: Path, out: Path,
                 scale: GeneralizationScale):
    """What every arm shares (the starting point, steps, batch, schedule, seed) with the arm's data."""
    from robovla.train.config import TrainConfig

    steps = scale.steps
    return TrainConfig(
        checkpoint=str(starting_point()), datasets=[str(demos[name]) for name in arm.data], mixture=arm.mixture,
        stage="cotrain" if arm.vision_language else "actions",
        vl_corpus=str(corpus) if arm.vision_language else None, augment=COLOUR_JITTER, augment_crop=False,
        steps=steps, batch_size=scale.batch_size,
        lr=3e-4, schedule="warmup-cosine", warmup_steps=max(1, steps // 10), seed=0, out=str(out),
        save_every=max(1, min(250, steps)), keep_checkpoints=1, log_every=max(1, min(50, steps)), progress=False,
    )


def fit_arm_pointer(checkpoint: Path, datasets: list[Path], out: Path, scale: GeneralizationScale,
                    vl_corpus: Path | None = None) -> dict[str, Any]:
    """A grounding pointer for a trained arm, fitted on the first frames of many scenes and on its default-robot
    demonstrations, as the shipped pointer was: fitted on the demonstrations alone (about 1,500 scenes, one
    instruction each) it placed the goal within 5 cm in only 62-71% of held-out frames, against the shipped
    pointer's 95%. With `vl_corpus`, the corpus's questions about one thing join in (`fit-pointer --vl-corpus`):
    the pointer is where the policy binds a word to an object, and a colour word that only the corpus holds can
    reach it only through them (validation-seed probes on the shipped policy: 9/30 semantic successes against
    3/30 with 4,000 questions beside 7,700 robot frames, 4/30 with 4,000 beside this recipe's 18,000 and 8/30 with
    8,000 beside them, the training suite kept at 29/30; docs/generalist.md).

    The fit starts from the starting point's own pointer, since the arm was fine-tuned from it and its hidden states
    moved only so far: on the narrow arm, 600 steps on every 16th demonstration frame place 97% / 97% of held-out
    targets / goals within 5 cm, where 2000 steps from random weights on every 8th frame placed 97% / 96%, in 9.5
    minutes instead of 19. The folder appears only when complete; a fit cut short starts again."""
    from robovla.train.pointer import fit_pointer
    from robovla.train.pointer_config import PointerFitConfig

    if not (out / "pointer_fit.json").exists():
        fit_pointer(PointerFitConfig(checkpoint=str(checkpoint), datasets=[str(path) for path in datasets],
                                     out=str(out), steps=scale.pointer_steps, frame_stride=scale.pointer_stride,
                                     holdout_episodes=50, vl_corpus=str(vl_corpus) if vl_corpus else None,
                                     vl_questions=scale.pointer_vl_questions,
                                     vl_holdout_scenes=scale.pointer_vl_holdout_scenes, augment=COLOUR_JITTER,
                                     init_pointer=str(starting_point())),
                    progress=False)
    report = json.loads((out / "pointer_fit.json").read_text())["report"]
    return {"checkpoint": str(out), "frames": report["frames"], "holdout_within": report["holdout_within"],
            "holdout_first_frame_within": report["holdout_first_frame_within"],
            "vl_questions": report["vl_questions"], "vl_holdout_within": report["vl_holdout_within"],
            "feature_seconds": report["feature_seconds"], "train_seconds": report["train_seconds"]}


def collect_corpus(out: Path, scenes: int, seed: int) -> dict[str, Any]:
    """The vision-language corpus (the folder appears only when complete)."""
    from robovla.data.vl_corpus import VLCorpusConfig, write_corpus
    from robovla.model.factory import packaged_tokenizer_path

    if (out / "card.json").exists():
        card = json.loads((out / "card.json").read_text())
    else:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(packaged_tokenizer_path("tabletop-small")))
        card = write_corpus(out, VLCorpusConfig(scenes=scenes, seed=seed), tokenizer, progress=False)
    return {"scenes": card["scenes"], "examples": card["examples"], "kinds": card["kinds"]}


def handled(folder: Path, conditions: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """From an evaluation's episode log: per condition, how often the first object moved was the target, another
    or none."""
    from robovla.eval.log import LOG_NAME, EpisodeLog

    counts = {condition: {"target": 0, "other": 0, "none": 0} for condition in conditions}
    for record in EpisodeLog(folder / LOG_NAME).records.values():
        if record.condition in counts and record.handled in counts[record.condition]:
            counts[record.condition][record.handled] += 1
    return counts


def chance_of_target(episodes: int) -> float:
    """The semantic suite's chance rate of going for the named object: the mean over its official episodes of one
    over the graspable objects in the scene (what picking an object at random would score)."""
    import numpy as np

    from robovla.eval.harness import OFFICIAL_SEED
    from robovla.sim.tasks import sample_episode
    from robovla.sim.variations import get_suite

    suite = get_suite("tabletop-semantic")
    counts = [len(sample_episode(np.random.default_rng(OFFICIAL_SEED + k), suite).objects) for k in range(episodes)]
    return float(np.mean([1.0 / n for n in counts]))


def evaluate_arm(log: Any, name: str, checkpoint: Path, work: Path, scale: GeneralizationScale,
                 workers: int) -> dict[str, Any]:
    from robovla.experiments.common import evaluate_checkpoint

    folder = work / "eval" / name
    evaluated = log.run(f"eval/{name}", lambda: evaluate_checkpoint(
        checkpoint, folder, CONDITIONS, scale.episodes, "default", workers, unnorm_key="tabletop_default",
        selection=SELECTION))
    # which object each episode moved first, on the training suite (seen colour words) and the semantic one
    return {**evaluated, "handled": handled(folder, ("tabletop-train", "tabletop-semantic"))}


def validation_episodes(scale: GeneralizationScale) -> int:
    """Episodes per suite on validation seeds that choose the generalist (two fifths of the official count)."""
    return max(2, scale.episodes * 2 // 5)


GENERALIST_POLICY = "tabletop-generalist"  # the shipped policies' name for the generalist (`--ship`)


def ship_generalist(document: dict[str, Any], target: Path | None = None) -> str:
    """The chosen arm copied into the package's shipped policies (`target`, by default
    assets/policies/tabletop-generalist) when it beat the starting point on validation seeds; a sentence saying
    what happened. The copy replaces an earlier one whole, or leaves it as it was."""
    import shutil

    from robovla.demo import shipped_policy_path
    from robovla.files import write_folder_atomic

    generalist = document["generalist"]
    if not generalist["beats_starting_point"]:
        return (f"the generalist ({generalist['arm']}) does not beat the starting point on validation seeds: "
                f"nothing shipped")
    target = target or shipped_policy_path(GENERALIST_POLICY)
    source = Path(generalist["checkpoint"])
    if not (source / "model.safetensors").exists():
        raise RobovlaError(f"the generalist's checkpoint {source} is not there: rerun the experiment to restore it")

    def fill(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("training_state"))
        folder.chmod(0o755)  # readable by everyone, as the package's other files

    write_folder_atomic(target, fill)
    return f"shipped the {generalist['arm']} arm as {target}"


def validation_total(result: dict[str, Any]) -> int:
    """Successes over every suite of one validation evaluation."""
    return sum(row["successes"] for row in result["conditions"].values())


def choose(validation: dict[str, dict[str, Any]]) -> str:
    """The arm with the most validation successes over the five suites (the first listed on a tie)."""
    totals = {name: validation_total(result) for name, result in validation.items()}
    return max(totals, key=lambda name: (totals[name], -list(totals).index(name)))


def copy_checkpoint(source: Path, target: Path) -> dict[str, Any]:
    """`source` copied to `target` (which appears only when complete)."""
    import shutil

    from robovla.files import write_folder_atomic

    if not target.exists():
        write_folder_atomic(target, lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True))
    return {"checkpoint": str(target), "from": str(source)}


def run(settings: GeneralizationSettings, command: str | None = None) -> dict[str, Any]:
    """Every stage in order, skipping what is done; returns (and writes) the results document."""
    from robovla.data.mixtures import get_mixture
    from robovla.eval.harness import simulator_versions
    from robovla.experiments.common import StageLog, collect_demonstrations, machine_speed, train_in_subprocess

    scale = SCALES[settings.scale]
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog(work / "experiment.json",
                   {"experiment": NAME, "scale": settings.scale, **vars(scale), "colour_jitter": COLOUR_JITTER})
    log.note_machine(machine_speed())
    demos = {name: work / "demos" / name for name in ("narrow", "diverse", "diverse-sideview")}
    scenes = {name: work / "pointer-scenes" / name for name in ("narrow", "diverse")}
    data: dict[str, Any] = {
        "narrow": log.run("demos/narrow", lambda: collect_demonstrations(
            demos["narrow"], scale.demos, seed=COLLECT_SEEDS["narrow"], wrist_camera=False)),
        "diverse": log.run("demos/diverse", lambda: collect_demonstrations(
            demos["diverse"], scale.demos - scale.sideview_demos, seed=COLLECT_SEEDS["diverse"], wrist_camera=False,
            suite="tabletop-diverse", instructions="augmented")),
        "diverse-sideview": log.run("demos/diverse-sideview", lambda: collect_demonstrations(
            demos["diverse-sideview"], scale.sideview_demos, seed=COLLECT_SEEDS["diverse-sideview"],
            wrist_camera=False, suite="tabletop-diverse", instructions="augmented", embodiment="sideview")),
    }
    # first frames of many scenes, each under several instructions, for the grounding pointers (seconds a thousand)
    for name, suite, instructions in (("narrow", "tabletop-train", "suite"),
                                      ("diverse", "tabletop-diverse", "augmented")):
        data[f"scenes-{name}"] = log.run(f"pointer-scenes/{name}", lambda: {
            "scenes": scale.pointer_scenes, "instructions_per_scene": POINTER_INSTRUCTIONS,
            **collect_demonstrations(scenes[name], scale.pointer_scenes * POINTER_INSTRUCTIONS,
                                     seed=COLLECT_SEEDS[f"scenes-{name}"], wrist_camera=False, suite=suite, noise=0.1,
                                     instructions=instructions, instructions_per_scene=POINTER_INSTRUCTIONS,
                                     max_frames=2)})
    corpus = work / "vl-corpus"
    data["vision-language"] = log.run("vl-corpus", lambda: collect_corpus(corpus, scale.vl_scenes,
                                                                          COLLECT_SEEDS["vision-language"]))
    arms: dict[str, Any] = {"shipped": {"label": "the starting point: the shipped policy (narrow data only)",
                                        "evaluation": evaluate_arm(log, "shipped", starting_point(), work, scale,
                                                                   settings.workers)}}
    for arm in ARMS:
        config = train_config(arm, demos, corpus, work / "train" / arm.name, scale)
        trained = log.run(f"train/{arm.name}", lambda: train_in_subprocess(config, work / "train" / f"{arm.name}.log"))
        pointer = log.run(f"pointer/{arm.name}", lambda: fit_arm_pointer(
            Path(trained["checkpoint"]), [scenes[arm.data[0]], demos[arm.data[0]]], work / "pointer" / arm.name,
            scale, vl_corpus=corpus if arm.vision_language else None))
        arms[arm.name] = {"label": arm.label, "data": list(arm.data), "mixture": arm.mixture,
                          "weights": get_mixture(arm.mixture) if arm.mixture else None,
                          "vision_language": arm.vision_language, "training": trained, "pointer": pointer,
                          "evaluation": evaluate_arm(log, arm.name, Path(pointer["checkpoint"]), work, scale,
                                                     settings.workers)}
    from robovla.eval.harness import VALIDATION_SEED
    from robovla.experiments.common import evaluate_checkpoint

    # the starting point runs the validation seeds too: the generalist joins the shipped policies only if it
    # beats the policy it started from there
    candidates = {"shipped": starting_point(),
                  **{arm.name: Path(arms[arm.name]["pointer"]["checkpoint"]) for arm in ARMS}}
    validation = {name: log.run(f"validate/{name}", lambda: evaluate_checkpoint(
        checkpoint, work / "validate" / name, SUITES, validation_episodes(scale), "default", settings.workers,
        unnorm_key="tabletop_default", selection=SELECTION, seed=VALIDATION_SEED))
        for name, checkpoint in candidates.items()}
    chosen = choose({name: result for name, result in validation.items() if name != "shipped"})
    generalist = log.run("generalist", lambda: {
        "arm": chosen, **copy_checkpoint(Path(arms[chosen]["pointer"]["checkpoint"]), work / "generalist")})
    beats = validation_total(validation[chosen]) > validation_total(validation["shipped"])
    document = {
        "schema": "robovla.experiment.generalization/1", "experiment": NAME, "scale": settings.scale,
        "command": command, "starting_point": str(shown_path(starting_point())), "steps": scale.steps,
        "batch_size": scale.batch_size, "pointer_steps": scale.pointer_steps, "lr": 3e-4, "episodes": scale.episodes,
        "selection": SELECTION, "conditions": list(CONDITIONS),
        "data": {name: {"seed": COLLECT_SEEDS[name], **record} for name, record in data.items()},
        "simulator": simulator_versions(SUITES),
        "semantic_chance": round(chance_of_target(scale.episodes), 4),
        "arms": {name: {**arm, "success": arm["evaluation"]["conditions"]} for name, arm in arms.items()},
        "validation": {"seed": VALIDATION_SEED, "episodes": validation_episodes(scale),
                       "success": {name: result["conditions"] for name, result in validation.items()}},
        "generalist": {**generalist, "beats_starting_point": beats},
        "wall_seconds": log.wall_seconds(),
        "machines": log.machines(),  # one entry per (re)run: the GEMM rate the wall-clocks depend on
    }
    from robovla.experiments.generalization_report import write_generalization_report

    return publish(out, document, write_generalization_report)
