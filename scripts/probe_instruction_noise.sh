#!/usr/bin/env bash
# Probe on validation seeds (docs/generalist.md, "Probe: instruction noise"): the generalization experiment's narrow arm
# (750 steps from tabletop-fine, colour jitter, pointer on jittered frames) trained and fitted with instruction
# noise. Do filler words it cannot read teach it to pass over the held-out rewrites' unknown words?
#
# The data are the generalization experiment's own (runs/generalization/demos/narrow, pointer-scenes/narrow).
#   nohup flock .cpu.lock scripts/probe_instruction_noise.sh > runs/probe-noise.log 2>&1 &
# Re-running resumes the training from its newest checkpoint and skips what is done. Evaluation: 40 episodes per
# condition from seed 2,000,000 (validation), for the experiment's narrow arm and for the noisy one.
# docs/generalist.md's figures came from the 180-minute run (batch 32, pointers from random weights), whose work
# folder was then renamed runs/generalization-180min: point WORK there to compare against that arm.
set -euo pipefail
ROBOVLA=${ROBOVLA:-.venv/bin/robovla}
WORK=${WORK:-runs/generalization}
NOISE=${NOISE:-0.5}
OUT=${OUT:-runs/probe-noise}
TRAIN="$OUT/train"
RESUME=$(ls "$TRAIN/checkpoints" 2>/dev/null | grep -q step && echo --resume || true)
[ -d "$TRAIN/checkpoints/step-000750" ] || $ROBOVLA train --checkpoint src/robovla/assets/policies/tabletop-fine \
    --datasets "$WORK/demos/narrow" --augment --no-augment-crop --instruction-noise "$NOISE" --steps 750 \
    --batch-size 32 --lr 3e-4 --schedule warmup-cosine --warmup-steps 75 --seed 0 --save-every 250 \
    --keep-checkpoints 1 --log-every 50 --no-progress --out "$TRAIN" $RESUME
[ -f "$OUT/pointer/pointer_fit.json" ] || $ROBOVLA fit-pointer --checkpoint "$TRAIN/checkpoints/step-000750" \
    --datasets "$WORK/pointer-scenes/narrow" "$WORK/demos/narrow" --augment --instruction-noise "$NOISE" \
    --steps 2000 --frame-stride 8 --holdout-episodes 50 --out "$OUT/pointer" --quiet
for NAME in narrow noisy; do
    CHECKPOINT=$([ $NAME = narrow ] && echo "$WORK/pointer/narrow" || echo "$OUT/pointer")
    $ROBOVLA eval --checkpoint "$CHECKPOINT" --suite tabletop-train --suite tabletop-train:punctuation \
        --suite tabletop-train:polite --suite tabletop-train:synonym --suite tabletop-train:order \
        --suite tabletop-semantic --episodes 40 --seed 2000000 --workers 2 --selection median \
        --unnorm-key tabletop_default --quiet --out "$OUT/validate-$NAME"
done
