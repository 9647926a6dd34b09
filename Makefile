# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: install demo test test-slow bench eval-shipped experiment-recipes experiment-fine-tuning experiment-limited-hardware experiment-metaworld experiment-generalization policy-generalist install-metaworld policy policy-gpu policy-pointer clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch + torchvision come from the machine's local wheel store (CPU execution).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(MUJOCO4_OUT)
	$(PY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

# MuJoCo 4's split packages (mujoco-core, mujoco-studio*) write into the same mujoco/ folder as 3.3.0, which the
# metaworld extra pins: a venv that had MuJoCo 4 drops all of them before 3.3.0 goes in, or `import mujoco` breaks
MUJOCO4_OUT = if $(PY) -m pip show -q mujoco-core 2>/dev/null; then \
	$(PY) -m pip uninstall -q -y mujoco mujoco-core mujoco-studio mujoco-studio-wasm; fi

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m robovla.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	# the long suites (compile warm-up, a second start from the compile cache, the shipped policy reproducing
	# results/shipped-policy, the quick recipes, fine-tuning and limited-hardware experiments end to end: ~10 min)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/bench_sim.py
	$(PY) benchmarks/quant_agreement.py
	$(PY) benchmarks/grounding_generalization.py
	$(PY) benchmarks/grounding_generalization.py --no-pointer --out benchmarks/results/grounding_no_pointer.json
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/recipes_speed.py
	$(PY) benchmarks/serve_startup.py

eval-shipped: $(STAMP)
	# results/shipped-policy: the shipped policy on the five suites and paraphrases, official seeds (~3 min on 2 cores;
	# rerun to resume after a kill)
	$(VENV)/bin/robovla eval --checkpoint src/robovla/assets/policies/tabletop-fine --suite all \
		--suite tabletop-train:paraphrase --episodes 50 --videos 2 --out results/shipped-policy --quiet

experiment-recipes: $(STAMP)
	# results/recipes: the reference recipe against OpenVLA-OFT's parallel decoding, trained from scratch on the same
	# 1000 demonstrations (about 3.5 h on 2 cores for the 6000-step schedule); rerun to resume; STOP_AT=N trains each
	# model to step N of its schedule now and reports that interim result
	$(VENV)/bin/robovla experiment recipes $(if $(STOP_AT),--stop-at $(STOP_AT))

experiment-fine-tuning: $(STAMP)
	# results/fine-tuning: the shipped generalist fine-tuned (full, LoRA) on 10/50/150 demonstrations of a new setup
	# against the same VLA from scratch and Diffusion Policy (about 110 min on 2 cores); rerun to resume
	$(VENV)/bin/robovla experiment fine-tuning

experiment-limited-hardware: $(STAMP)
	# results/limited-hardware: six fine-tuning strategies, then fp32/bf16/int8/int4 weights of the best, and the
	# strategies' trainable counts on openvla-7b (about 35 min on 2 cores); rerun to resume
	$(VENV)/bin/robovla experiment limited-hardware

experiment-generalization: $(STAMP)
	# results/generalization: from the shipped policy, narrow data vs the diverse mixture vs the mixture co-trained with
	# the vision-language corpus, on the five suites and four instruction rewrite families (about 2 h on 2 cores); rerun
	# to resume
	$(VENV)/bin/robovla experiment generalization --workers 2

policy-generalist: $(STAMP)
	# the generalization experiment (resumes), then its generalist into assets/policies/tabletop-generalist when it
	# beats tabletop-fine on validation seeds
	$(VENV)/bin/robovla experiment generalization --workers 2 --ship

install-metaworld: $(STAMP)
	# the metaworld extra (metaworld 3.1.1 + the mujoco 3.3.0 it pins) into an existing venv; `make install` has it
	$(MUJOCO4_OUT)
	$(PY) -m pip install -q -e '.[metaworld]'

experiment-metaworld: $(STAMP)
	# results/metaworld: a VLA and Diffusion Policy trained on Meta-World MT10 beside published rows, then the scripted
	# experts on MT50 (about 2 h on 2 cores, the MT50 experts 15 min more); rerun to resume
	$(VENV)/bin/robovla experiment metaworld --workers 2

policy: $(STAMP)
	# the shipped tabletop-cpu policy from nothing (~4.5 h on 2 cores); re-run to resume after a kill
	bash scripts/train_tabletop_policy.sh

policy-gpu: $(STAMP)
	# the shipped tabletop-fine policy from nothing on one CUDA GPU (~20 min on an H100 with 16 cores)
	ROBOVLA=$(VENV)/bin/robovla bash scripts/train_tabletop_fine.sh

policy-pointer: $(STAMP)
	# the shipped policy's grounding pointer on the CPU (~32 min on 2 cores), on policy-gpu's output or the shipped weights
	ROBOVLA=$(VENV)/bin/robovla bash scripts/fit_tabletop_pointer.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
