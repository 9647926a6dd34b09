#!/usr/bin/env bash
# The shipped policy's grounding pointer, on 2 CPU cores: demonstrations that show each scene under up to 3
# instructions (first frames of many scenes, plus whole episodes), then `robovla fit-pointer` on the frozen
# GPU-trained tabletop-fine policy, then the closed-loop evaluation. Re-running skips what is already there.
# Measured on 2 CPU cores (README, "The shipped policy"): about 32 minutes in all.
set -euo pipefail
ROBOVLA=${ROBOVLA:-robovla}
# the policy the pointer reads: `make policy-gpu`'s output if it is there, else the shipped one (same weights)
BASE=${BASE:-$([ -d runs/tabletop-fine-policy ] && echo runs/tabletop-fine-policy || echo src/robovla/assets/policies/tabletop-fine)}
FIRST=${FIRST:-data/tabletop-train-128-first}  # 9,000 demonstrations of 3,000 scenes, first frames only
SCENES=${SCENES:-data/tabletop-train-128-scenes}  # 3,000 whole demonstrations of about 1,000 scenes
OUT=${OUT:-runs/tabletop-fine-pointer}
WORKERS=${WORKERS:-2}

[ -f "$FIRST/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 9000 --out "$FIRST" \
    --image-size 128 --workers "$WORKERS" --seed 31 --instructions-per-scene 3 --max-frames 2 --quiet
[ -f "$SCENES/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 3000 --out "$SCENES" \
    --image-size 128 --workers "$WORKERS" --seed 33 --noise 0.3 --instructions-per-scene 3 --quiet
[ -d "$OUT" ] || $ROBOVLA fit-pointer --checkpoint "$BASE" --datasets "$FIRST" "$SCENES" --out "$OUT" \
    --frame-stride 4 --steps 4000
$ROBOVLA eval --checkpoint "$OUT" --episodes 50
