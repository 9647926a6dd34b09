#!/usr/bin/env bash
# Probe on validation seeds (docs/generalist.md, "Probe: referring questions in the pointer"): the shipped policy,
# unchanged, with a grounding pointer fitted on robot frames plus the vision-language corpus's questions about one
# thing. Does a colour word that only the corpus holds send the robot to the named object?
#
# The data are the generalization experiment's own: run `robovla experiment generalization` until its `vl-corpus`
# stage is done (the first stages, about 10 minutes; stop it there if you only want the probe). Then:
#   MAX_FRAMES=8000 STEPS=1500 OUT=runs/probe-referring scripts/probe_pointer_questions.sh   # first fit
#   STEPS=3000 OUT=runs/probe-pointer-full scripts/probe_pointer_questions.sh                # second fit
#   QUESTIONS=8000 OUT=runs/probe-all-questions scripts/probe_pointer_questions.sh           # the experiment's recipe
# Re-running skips what is already there. Evaluation: 30 episodes per suite from seed 2,000,000 (validation).
set -euo pipefail
ROBOVLA=${ROBOVLA:-robovla}
WORK=${WORK:-runs/generalization}
OUT=${OUT:-runs/probe-pointer-full}
STEPS=${STEPS:-3000}
QUESTIONS=${QUESTIONS:-4000}
FRAMES=()
[ -n "${MAX_FRAMES:-}" ] && FRAMES=(--max-frames "$MAX_FRAMES")

[ -d "$WORK/vl-corpus" ] || { echo "no $WORK/vl-corpus: run robovla experiment generalization first" >&2; exit 1; }
[ -d "$OUT/pointer" ] || $ROBOVLA fit-pointer --checkpoint src/robovla/assets/policies/tabletop-fine \
    --datasets "$WORK/pointer-scenes/narrow" "$WORK/demos/narrow" --out "$OUT/pointer" --frame-stride 8 \
    "${FRAMES[@]}" --steps "$STEPS" --holdout-episodes 50 --vl-corpus "$WORK/vl-corpus" \
    --vl-questions "$QUESTIONS" --vl-holdout-scenes 100 --quiet
[ -f "$OUT/eval/results.json" ] || $ROBOVLA eval --checkpoint "$OUT/pointer" --suite tabletop-semantic \
    --suite tabletop-train --episodes 30 --seed 2000000 --workers 2 --selection median --out "$OUT/eval" --quiet
