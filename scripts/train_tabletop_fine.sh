#!/usr/bin/env bash
# The tabletop-fine policy (8 px patches, 256 patch tokens a tower) from nothing, on one CUDA GPU: collect
# grounded demonstrations with 3x execution noise, train from scratch with the robot state, grounding tokens
# and chunks of 4, export in bf16 with median selection. Resumable: re-running continues a killed run.
# Measured on one H100 with 16 CPU cores (README, "The shipped policy (trained on one GPU)").
set -euo pipefail
ROBOVLA=${ROBOVLA:-robovla}
# 1 reproduces the shipped policy; 3 demonstrates each scene under up to 3 instructions (README, "Why: it does not
# read the colour words"), the next run to try
SCENE_INSTRUCTIONS=${SCENE_INSTRUCTIONS:-1}
SUFFIX=$([ "$SCENE_INSTRUCTIONS" = 1 ] || echo "-x$SCENE_INSTRUCTIONS")  # other data, other run folders
DATA=${DATA:-data/tabletop-train-128-fine$SUFFIX}
RUN=${RUN:-runs/tabletop-fine$SUFFIX}
SHIP=${SHIP:-runs/tabletop-fine-policy$SUFFIX}
EPISODES=${EPISODES:-12000}
STEPS=${STEPS:-11700}  # the shipped policy's schedule
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}  # 14 on the 16-core H100 machine

[ -f "$DATA/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes "$EPISODES" --out "$DATA" \
    --image-size 128 --workers "$WORKERS" --seed 21 --noise 0.3 --instructions-per-scene "$SCENE_INSTRUCTIONS" --quiet
resume=()
if compgen -G "$RUN/checkpoints/step-*" > /dev/null; then resume=(--resume); fi
$ROBOVLA train --preset tabletop-fine --grounding --proprio --action-chunk 4 --datasets "$DATA" \
    --steps "$STEPS" --batch-size 128 --lr 5e-4 --schedule warmup-cosine --warmup-steps 300 --no-augment \
    --save-every 500 --keep-checkpoints 3 --log-every 50 --loader-workers "$WORKERS" --no-progress \
    --out "$RUN" "${resume[@]}"
FINAL=$(ls -d "$RUN"/checkpoints/step-* | sort | tail -1)
[ -d "$SHIP" ] || $ROBOVLA export --checkpoint "$FINAL" --out "$SHIP" --selection median
