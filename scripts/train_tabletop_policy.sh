#!/usr/bin/env bash
# The shipped tabletop-cpu policy, from nothing: collect demonstrations, train, fine-tune with the robot
# state, evaluate, export in bf16. Every stage is skipped when its result exists and resumes when interrupted,
# so re-running after a kill continues where it stopped. About 4.5 hours on 2 CPU cores (see README).
set -euo pipefail
ROBOVLA=${ROBOVLA:-.venv/bin/robovla}
DATA=data/tabletop-train-128
NOISY=data/tabletop-train-128-n03
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

stage() {  # stage OUT FINAL_STEP COMMAND...: run (or resume) a training command unless it has finished
    local out=$1 final=$2; shift 2
    if [ -d "$out/checkpoints/$final" ]; then echo "== $out: done"; return; fi
    local resume=()
    if compgen -G "$out/checkpoints/step-*" > /dev/null; then resume=(--resume); fi
    "$@" --out "$out" "${resume[@]}"
}

# what every fine-tuning stage from v4 on shares
TUNE=(--strategy full --batch-size 32 --lr 3e-4 --schedule warmup-cosine --no-augment --save-every 1000
      --keep-checkpoints 10 --log-every 50)

dagger() {  # dagger OUT SEED POLICY: 1000 episodes where POLICY drives half the steps and the expert labels all
    [ -f "$1/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 1000 --out "$1" \
        --image-size 128 --workers 2 --seed "$2" --noise 0.3 --policy "$3" --policy-share 0.5
}

[ -f "$DATA/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 3000 --out "$DATA" \
    --image-size 128 --workers 2 --seed 1
# 1. image-only pre-training from scratch (learns to find the objects)
stage runs/tabletop-cpu-v1 step-005000 $ROBOVLA train --preset tabletop-cpu --no-proprio --datasets "$DATA" \
    --steps 5000 --batch-size 32 --lr 3e-4 --schedule warmup-cosine --warmup-steps 200 --no-augment \
    --save-every 500
stage runs/tabletop-cpu-v1b step-004000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-v1/checkpoints/step-005000 \
    --strategy full --datasets "$DATA" --steps 4000 --batch-size 32 --lr 2e-4 --schedule warmup-cosine \
    --warmup-steps 100 --no-augment --save-every 1000 --log-every 50
# 2. add the robot state to the prompt and fine-tune everything on demonstrations with 3x the execution noise
#    (DART: states further off the expert's path, labelled with its corrections)
[ -f "$NOISY/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 3000 --out "$NOISY" \
    --image-size 128 --workers 2 --seed 2 --noise 0.3
stage runs/tabletop-cpu-v4 step-008000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-v1b/checkpoints/step-004000 \
    --proprio --datasets "$NOISY" --steps 8000 --warmup-steps 200 "${TUNE[@]}"
# 3. say where the named objects are before acting (grounding tokens), on 4000 new demos that record them
GROUNDED=data/tabletop-train-128-g
[ -f "$GROUNDED/meta/info.json" ] || $ROBOVLA collect --suite tabletop-train --episodes 4000 --out "$GROUNDED" \
    --image-size 128 --workers 2 --seed 3 --noise 0.3
stage runs/tabletop-cpu-g1 step-003000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-v4/checkpoints/step-008000 \
    --grounding --proprio --datasets "$GROUNDED" --steps 10000 --stop-at 3000 --warmup-steps 200 "${TUNE[@]}"
# 4. DAgger: that policy drives half the steps, the expert labels every state it visits; train on both
DAGGER1=data/tabletop-train-128-d1
dagger "$DAGGER1" 11 runs/tabletop-cpu-g1/checkpoints/step-003000
stage runs/tabletop-cpu-g2 step-003000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-g1/checkpoints/step-003000 \
    --datasets "$GROUNDED" "$DAGGER1" --steps 6000 --stop-at 3000 --warmup-steps 200 "${TUNE[@]}"
# 5. predict chunks of 4 actions (executed in order: carries the policy through the grasp's pause)
stage runs/tabletop-cpu-g3 step-002000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-g2/checkpoints/step-003000 \
    --action-chunk 4 --datasets "$GROUNDED" "$DAGGER1" --steps 6000 --stop-at 2000 --warmup-steps 200 "${TUNE[@]}"
# 6. a second DAgger round with the chunking policy, then train on all of it
DAGGER2=data/tabletop-train-128-d2
dagger "$DAGGER2" 12 runs/tabletop-cpu-g3/checkpoints/step-002000
stage runs/tabletop-cpu-g4 step-004000 $ROBOVLA finetune --checkpoint runs/tabletop-cpu-g3/checkpoints/step-002000 \
    --datasets "$GROUNDED" "$DAGGER1" "$DAGGER2" --steps 4000 --warmup-steps 100 "${TUNE[@]}"
FINAL=runs/tabletop-cpu-g4/checkpoints/step-004000
# 7. ship: bf16 weights without the training state, median token selection, then measure the shipped files
SHIP=${SHIP:-runs/tabletop-cpu-policy}
[ -d "$SHIP" ] || $ROBOVLA export --checkpoint "$FINAL" --out "$SHIP" --selection median
$ROBOVLA eval --checkpoint "$SHIP" --suite tabletop-train --episodes 50
