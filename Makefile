# chordkd: `make help` lists the targets. Every target reuses what is already done.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CHORDKD := $(BIN)/chordkd
STUDENT ?= btc
DATA ?= data/demo
RUNS ?= runs
ARGS ?=            # overrides for the student runs, e.g. ARGS="trainer.max_epochs=10"
TEACHER_ARGS ?=    # overrides for the teacher run
ROUNDS ?= 3
TEACHER ?= btc     # btc: train chordkd's BTC teacher on the teacher part; madmom: madmom's CNN
SIZES ?= small      # noisy student: one size per round, or one for all (no smaller than the teacher)
export WANDB_MODE ?= offline

# Where each stage's run lives (the folder is derived from the experiment config).
run_dir = $$($(CHORDKD) fit experiments/$(1).yaml student=$(2) $(ARGS) --print-run-dir)
TEACHER_CKPT = $$($(CHORDKD) fit experiments/teacher.yaml $(TEACHER_ARGS) --print-run-dir)/checkpoints/best.ckpt

# The teacher. TEACHER=madmom: madmom's pre-trained CNN (chordkd[madmom]) labels in the majmin
# vocabulary, nothing is trained for it, and its caches, runs and tables are kept apart.
ifeq ($(strip $(TEACHER)),madmom)
TEACHER_SPEC = madmom:cnn
TEACHER_DEP = synth
CACHE = $(RUNS)/teacher_cache_madmom
EVAL = $(RUNS)/eval_madmom
MM = vocabulary=majmin data.valid=$(DATA)/valid data.test=$(DATA)/test
STAGE1_ARGS = $(MM) data.train=$(DATA)/pool data.teacher_cache=$(CACHE)/pool
STAGE2_ARGS = $(MM) data.train=$(DATA)/train data.teacher_cache=$(CACHE)/train
BASELINE_ARGS = $(MM) data.train=$(DATA)/train
else
TEACHER_SPEC = $(TEACHER_CKPT)
TEACHER_DEP = teacher
CACHE = $(RUNS)/teacher_cache
EVAL = $(RUNS)/eval
endif
STAGE1_CKPT = $(call run_dir,stage1,$(STUDENT) $(STAGE1_ARGS))/checkpoints/best.ckpt

.PHONY: help install test test-fast lint synth teacher label stage1 stage2 baseline evaluate \
        results demo feature-kd noisy-student bench mutants gpu-check clean

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/chordkd: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchaudio==2.11.0
	$(BIN)/pip install -q -e '.[test,madmom]'
	$(BIN)/pip install -q --no-deps 'tinysoundfont>=0.3.7,<0.4'  # its pyaudio dep does not build
	touch $@

install: $(BIN)/chordkd  ## make .venv and install chordkd with its test and madmom extras

test: install  ## run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q

test-fast: install  ## the suite without tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install  ## ruff
	$(BIN)/ruff check chordkd tests bench mutants

$(DATA)/test/manifest.csv: | install
	$(CHORDKD) synth --preset demo --out $(DATA)

synth: $(DATA)/test/manifest.csv  ## synthesise the demo corpus (teacher, pool, train, valid, test)

teacher: synth  ## train the BTC teacher on the demo corpus's teacher part
	$(CHORDKD) fit experiments/teacher.yaml $(TEACHER_ARGS)

label: $(TEACHER_DEP)  ## cache the teacher's logits (TEACHER=btc|madmom) on the pool and the labelled train part
	$(CHORDKD) label --teacher $(TEACHER_SPEC) --audio $(DATA)/pool --out $(CACHE)/pool
	$(CHORDKD) label --teacher $(TEACHER_SPEC) --audio $(DATA)/train --out $(CACHE)/train

stage1: label  ## stage 1: STUDENT=btc|2e1d learns from pseudo-labels alone
	$(CHORDKD) fit experiments/stage1.yaml student=$(STUDENT) data.teacher=$(TEACHER_SPEC) \
	    $(STAGE1_ARGS) $(ARGS)

stage2: stage1  ## stage 2: ground truth + selective KD, from the stage-1 student
	$(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(STAGE1_CKPT) \
	    data.teacher=$(TEACHER_SPEC) $(STAGE2_ARGS) $(ARGS)

baseline: synth  ## supervised-only baseline for STUDENT on the labelled train part
	$(CHORDKD) fit experiments/baseline.yaml student=$(STUDENT) $(BASELINE_ARGS) $(ARGS)

# madmom's CNN, as a frame classifier (argmax, what the students learn from) and with its own
# CRF, in one pass over the test part; reused while its report exists (its inputs are fixed).
$(RUNS)/eval_madmom/teacher/overall.json: | synth
	$(CHORDKD) evaluate madmom:cnn madmom:cnn --decode argmax crf --names teacher madmom-crf \
	    --roles teacher teacher-crf --student btc --data $(DATA)/test --out $(RUNS)/eval_madmom/teacher

ifeq ($(strip $(TEACHER)),madmom)
evaluate: stage2 baseline $(RUNS)/eval_madmom/teacher/overall.json
else
evaluate: stage2 baseline  ## mir_eval report for teacher, baseline, stage 1 and stage 2 on the test part
	$(CHORDKD) evaluate $(TEACHER_SPEC) --names teacher --roles teacher --student btc \
	    --data $(DATA)/test --out $(EVAL)/teacher
endif
	$(CHORDKD) evaluate $(call run_dir,baseline,$(STUDENT) $(BASELINE_ARGS))/checkpoints/best.ckpt $(STAGE1_CKPT) \
	    $(call run_dir,stage2,$(STUDENT) init=$(STAGE1_CKPT) $(STAGE2_ARGS))/checkpoints/best.ckpt \
	    --names baseline stage1 stage2 --roles baseline stage1 stage2 --student $(STUDENT) \
	    --data $(DATA)/test --out $(EVAL)/$(STUDENT)

results:  ## assemble the paper-style results table from every evaluation under runs/
	$(CHORDKD) results --runs $(EVAL) --out $(EVAL:$(RUNS)/eval%=$(RUNS)/results%)

demo: evaluate  ## the whole pipeline for STUDENT (TEACHER=btc|madmom) on the demo corpus, then the results table
	$(MAKE) --no-print-directory results

feature-kd: label  ## feature-space KD from the teacher's embeddings, alone and with logit KD, for STUDENT
	$(CHORDKD) label --embeddings --teacher $(TEACHER_CKPT) --audio $(DATA)/train \
	    --out $(RUNS)/teacher_cache/train_embeddings
	$(CHORDKD) fit experiments/feature_kd.yaml student=$(STUDENT) $(ARGS)
	$(CHORDKD) fit experiments/feature_logit_kd.yaml student=$(STUDENT) $(ARGS)
	$(CHORDKD) evaluate $(call run_dir,feature_kd,$(STUDENT))/checkpoints/best.ckpt \
	    $(call run_dir,feature_logit_kd,$(STUDENT))/checkpoints/best.ckpt \
	    --names feature_kd feature_logit_kd --roles feature_kd feature_logit_kd --student $(STUDENT) \
	    --data $(DATA)/test --out $(RUNS)/eval/$(STUDENT)-feature-kd

noisy-student: label  ## noisy student: ROUNDS rounds of STUDENT at SIZES on DATA's train (ground truth) + pool (pseudo-labels)
	$(CHORDKD) noisy-student --config experiments/noisy_student.yaml --student $(STUDENT) \
	    --rounds $(ROUNDS) --sizes $(SIZES) --teacher $(TEACHER_CKPT) \
	    --teacher-cache $(RUNS)/teacher_cache/pool data.train=$(DATA)/pool \
	    data.labelled=$(DATA)/train data.valid=$(DATA)/valid data.test=$(DATA)/test $(ARGS)

bench: install  ## benchmarks: CQT, data path (+ peers), labelling, cache, training, levers, vs madmom, scaling, synthesis -> bench/*.{json,md}
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)
	$(BIN)/python bench/scaling.py $(SCALING_ARGS)  # incremental cache, streamed data path
	$(BIN)/python bench/realistic_synth.py $(filter --quick,$(BENCH_ARGS))

mutants: install  ## deliberate bugs, one at a time, vs the tests that must catch them -> mutants/results.md
	WANDB_MODE=offline $(BIN)/python mutants/run.py $(MUTANTS_ARGS)

gpu-check: install  ## the GPU path end to end (CUDA; at most 8 min) -> bench/gpu_results.{json,md}
	PY=$(BIN)/python bench/gpu_check.sh

clean:  ## remove runs and generated data (keeps .venv)
	rm -rf $(RUNS) data bench/out
