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
SIZES ?= small,base,large
export WANDB_MODE ?= offline

# Where each stage's run lives (the folder is derived from the experiment config).
run_dir = $$($(CHORDKD) fit experiments/$(1).yaml student=$(2) $(ARGS) --print-run-dir)
TEACHER_CKPT = $$($(CHORDKD) fit experiments/teacher.yaml $(TEACHER_ARGS) --print-run-dir)/checkpoints/best.ckpt
STAGE1_CKPT = $(call run_dir,stage1,$(STUDENT))/checkpoints/best.ckpt

.PHONY: help install test test-fast lint synth teacher label stage1 stage2 baseline evaluate \
        results demo feature-kd noisy-student bench gpu-check clean

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/chordkd: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchaudio==2.11.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/chordkd  ## make .venv and install chordkd with its test extras

test: install  ## run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q

test-fast: install  ## the suite without tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install  ## ruff
	$(BIN)/ruff check chordkd tests bench

$(DATA)/test/manifest.csv: | install
	$(CHORDKD) synth --preset demo --out $(DATA)

synth: $(DATA)/test/manifest.csv  ## synthesise the demo corpus (teacher, pool, train, valid, test)

teacher: synth  ## train the BTC teacher on the demo corpus's teacher part
	$(CHORDKD) fit experiments/teacher.yaml $(TEACHER_ARGS)

label: teacher  ## cache the teacher's logits on the unlabelled pool and the labelled train part
	$(CHORDKD) label --teacher $(TEACHER_CKPT) --audio $(DATA)/pool --out $(RUNS)/teacher_cache/pool
	$(CHORDKD) label --teacher $(TEACHER_CKPT) --audio $(DATA)/train --out $(RUNS)/teacher_cache/train

stage1: label  ## stage 1: STUDENT=btc|2e1d learns from pseudo-labels alone
	$(CHORDKD) fit experiments/stage1.yaml student=$(STUDENT) $(ARGS)

stage2: stage1  ## stage 2: ground truth + selective KD, from the stage-1 student
	$(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(STAGE1_CKPT) $(ARGS)

baseline: synth  ## supervised-only baseline for STUDENT on the labelled train part
	$(CHORDKD) fit experiments/baseline.yaml student=$(STUDENT) $(ARGS)

evaluate: stage2 baseline  ## mir_eval report for teacher, baseline, stage 1 and stage 2 on the test part
	$(CHORDKD) evaluate $(TEACHER_CKPT) --names teacher --roles teacher --student btc \
	    --data $(DATA)/test --out $(RUNS)/eval/teacher
	$(CHORDKD) evaluate $(call run_dir,baseline,$(STUDENT))/checkpoints/best.ckpt $(STAGE1_CKPT) \
	    $(call run_dir,stage2,$(STUDENT) init=$(STAGE1_CKPT))/checkpoints/best.ckpt \
	    --names baseline stage1 stage2 --roles baseline stage1 stage2 --student $(STUDENT) \
	    --data $(DATA)/test --out $(RUNS)/eval/$(STUDENT)

results:  ## assemble the paper-style results table from every evaluation under runs/
	$(CHORDKD) results --runs $(RUNS)/eval --out $(RUNS)/results

demo: evaluate  ## the whole pipeline for STUDENT on the demo corpus, then the results table
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

noisy-student: label  ## noisy student: ROUNDS rounds of STUDENT at SIZES, each relabelling the pool
	$(CHORDKD) noisy-student --config experiments/noisy_student.yaml --student $(STUDENT) \
	    --rounds $(ROUNDS) --sizes $(SIZES) --teacher $(TEACHER_CKPT) \
	    --teacher-cache $(RUNS)/teacher_cache/pool $(ARGS)

bench: install  ## benchmarks: CQT, data path (+ peers), labelling, cache, training, scaling, levers, vs madmom -> bench/results.{json,md}
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

gpu-check: install  ## the GPU path end to end (CUDA; at most 8 min) -> bench/gpu_results.{json,md}
	PY=$(BIN)/python bench/gpu_check.sh

clean:  ## remove runs and generated data (keeps .venv)
	rm -rf $(RUNS) data bench/out
