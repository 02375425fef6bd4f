# chordkd: `make help` lists the targets. Every target reuses what is already done.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CHORDKD := $(BIN)/chordkd
STUDENT ?= btc
PRESET ?= realistic  # realistic: a 1.85-hour unlabelled pool, 11x the 10-minute labelled set; demo: the older all-synthetic corpus
DATA ?= data/$(strip $(PRESET))
RUNS ?= runs
SEED ?= 0          # every row (teacher included) is trained with this seed; `make seeds N=3` loops over 0..N-1
N ?= 3
ARGS ?=            # overrides for the student runs, e.g. ARGS="trainer.max_epochs=10"
TEACHER_ARGS ?=    # overrides for the teacher run
ROUNDS ?= 3
TEACHER ?= btc     # btc: train chordkd's BTC teacher on the labelled set; madmom: madmom's CNN
SIZES ?= small      # noisy student: one size per round, or one for all (no smaller than the teacher)
STUDENTS ?= btc 2e1d
export WANDB_MODE ?= offline

# The labelled set L: the teacher and the students' stage 2 and baseline all train on it. The demo
# preset keeps its older shape (a teacher part 4x the students' labelled part).
TEACHER_PART = $(if $(filter demo,$(strip $(PRESET))),teacher,train)
PATHS = data.valid=$(DATA)/valid data.test=$(DATA)/test
# The teacher of seed s trains with seed 1000 + s: at the demo's sizes the BTC baseline runs the
# teacher's recipe on the teacher's data, and must be an independent re-run of it, not a copy.
TEACHER_SEED = $(shell echo $$((1000 + $(strip $(SEED)))))

# Where each stage's run lives (the folder is derived from the experiment config).
run_dir = $$($(CHORDKD) fit experiments/$(1).yaml student=$(2) $(ARGS) --print-run-dir)
TEACHER_RUN_ARGS = data.train=$(DATA)/$(TEACHER_PART) $(PATHS) seed=$(TEACHER_SEED) $(TEACHER_ARGS)
TEACHER_CKPT = $$($(CHORDKD) fit experiments/teacher.yaml $(TEACHER_RUN_ARGS) --print-run-dir)/checkpoints/best.ckpt

# The teacher. TEACHER=madmom: madmom's pre-trained CNN (chordkd[madmom]) labels in the majmin
# vocabulary, nothing is trained for it, and its caches, runs and tables are kept apart.
ifeq ($(strip $(TEACHER)),madmom)
TEACHER_SPEC = madmom:cnn
TEACHER_DEP = synth
CACHE = $(RUNS)/teacher_cache_madmom
EVAL = $(RUNS)/eval_madmom/seed$(strip $(SEED))
MM = vocabulary=majmin
else
TEACHER_SPEC = $(TEACHER_CKPT)
TEACHER_DEP = teacher
CACHE = $(RUNS)/teacher_cache/seed$(strip $(SEED))
EVAL = $(RUNS)/eval/seed$(strip $(SEED))
MM =
endif
# Stage 1 reads no label: it validates on held-out pool songs scored against the teacher.
RESULTS = $(subst /eval,/results,$(patsubst %/seed$(strip $(SEED)),%,$(EVAL)))
STAGE1_ARGS = $(MM) seed=$(strip $(SEED)) data.train=$(DATA)/pool data.teacher_cache=$(CACHE)/pool
STAGE2_ARGS = $(MM) $(PATHS) seed=$(strip $(SEED)) data.train=$(DATA)/train data.teacher_cache=$(CACHE)/train
BASELINE_ARGS = $(MM) $(PATHS) seed=$(strip $(SEED)) data.train=$(DATA)/train
STAGE1_CKPT = $(call run_dir,stage1,$(STUDENT) $(STAGE1_ARGS))/checkpoints/best.ckpt

.PHONY: help install test test-fast lint synth teacher label stage1 stage2 baseline evaluate \
        results demo seeds ablations viterbi scaling feature-kd noisy-student probe probe-encoders bench mutants gpu-check clean

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
	$(CHORDKD) synth --preset $(strip $(PRESET)) --out $(DATA)

synth: $(DATA)/test/manifest.csv  ## synthesise the PRESET corpus (realistic: train, pool, valid, test, test_scores)

teacher: synth  ## train the BTC teacher (seed SEED) on the labelled set
	$(CHORDKD) fit experiments/teacher.yaml $(TEACHER_RUN_ARGS)

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

STAGE2_CKPT = $(call run_dir,stage2,$(STUDENT) init=$(STAGE1_CKPT) $(STAGE2_ARGS))/checkpoints/best.ckpt
BASELINE_CKPT = $(call run_dir,baseline,$(STUDENT) $(BASELINE_ARGS))/checkpoints/best.ckpt

ifeq ($(strip $(TEACHER)),madmom)
evaluate: stage2 baseline $(RUNS)/eval_madmom/teacher/overall.json
else
evaluate: stage2 baseline  ## mir_eval report for teacher, baseline, stage 1 and stage 2 (seed SEED) on the test part
	$(CHORDKD) evaluate $(TEACHER_SPEC) --names teacher --roles teacher --student btc --seed $(strip $(SEED)) \
	    --data $(DATA)/test --out $(EVAL)/teacher
endif
	$(CHORDKD) evaluate $(BASELINE_CKPT) $(STAGE1_CKPT) $(STAGE2_CKPT) \
	    --names baseline stage1 stage2 --roles baseline stage1 stage2 --student $(STUDENT) \
	    --seed $(strip $(SEED)) --data $(DATA)/test --out $(EVAL)/$(STUDENT)

results:  ## the results table (mean ± std over seeds, paired per-song bootstrap) from every evaluation of TEACHER
	$(CHORDKD) results --runs $(EVAL:%/seed$(strip $(SEED))=%) --out $(RESULTS)

demo: evaluate  ## the whole pipeline for STUDENT (TEACHER=btc|madmom) on the PRESET corpus, then the results table
	$(MAKE) --no-print-directory results

seeds:  ## `make demo` for every seed 0..N-1 and every student in STUDENTS, then one table with mean ± std
	for s in $$(seq 0 $$(($(N) - 1))); do for st in $(STUDENTS); do \
	    $(MAKE) --no-print-directory evaluate SEED=$$s STUDENT=$$st || exit 1; done; done
	$(MAKE) --no-print-directory results

# Ablations of stage 2 (seed SEED), rows of the same table: no KD from the stage-1 weights (which
# separates pre-training from distillation), the other KD rules, the temperature, and a soft
# stage 1 (KD on every frame instead of hard pseudo-labels) followed by the usual stage 2, and the
# rules applied to the teacher's own confidence (T = 1) instead of the tempered one.
ABLATIONS ?= nokd:kd.alpha=0 rule-threshold:kd.rule=threshold rule-agree:kd.rule=agree \
             rule-all:kd.rule=all T1:kd.temperature=1 T5:kd.temperature=5 \
             conf-teacher:kd.confidence=teacher
SOFT1_ARGS = $(STAGE1_ARGS) kd.enabled=true kd.rule=all kd.alpha=1
SOFT1_CKPT = $(call run_dir,stage1,$(STUDENT) $(SOFT1_ARGS))/checkpoints/best.ckpt
ablations: stage1  ## stage-2 ablations for STUDENT (seed SEED): no KD, rules, T, soft stage 1
	set -e; ckpts=; names=; for ab in $(ABLATIONS); do v=$${ab%%:*}; o=$${ab#*:}; \
	    $(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(STAGE1_CKPT) \
	        data.teacher=$(TEACHER_SPEC) $(STAGE2_ARGS) $$o $(ARGS); \
	    ckpts="$$ckpts $$($(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(STAGE1_CKPT) \
	        $(STAGE2_ARGS) $$o $(ARGS) --print-run-dir)/checkpoints/best.ckpt"; names="$$names stage2-$$v"; done; \
	$(CHORDKD) fit experiments/stage1.yaml student=$(STUDENT) data.teacher=$(TEACHER_SPEC) $(SOFT1_ARGS) $(ARGS); \
	$(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(SOFT1_CKPT) \
	    data.teacher=$(TEACHER_SPEC) $(STAGE2_ARGS) $(ARGS); \
	$(CHORDKD) evaluate $$ckpts $(SOFT1_CKPT) \
	    $(call run_dir,stage2,$(STUDENT) init=$(SOFT1_CKPT) $(STAGE2_ARGS))/checkpoints/best.ckpt \
	    --names $$names stage1-soft stage2-soft1 --roles $$names stage1-soft stage2-soft1 \
	    --student $(STUDENT) --seed $(strip $(SEED)) --data $(DATA)/test --out $(EVAL)/$(STUDENT)-ablations

viterbi: evaluate  ## the effect of Viterbi smoothing (p=0.9) on stage 2 and the teacher (seed SEED): rows +viterbi
	$(CHORDKD) evaluate $(STAGE2_CKPT) $(if $(MM),,$(TEACHER_SPEC)) --decode viterbi $(if $(MM),,viterbi) \
	    --smoothing 0.9 --names stage2 $(if $(MM),,teacher) --roles stage2 $(if $(MM),,teacher) \
	    --student $(STUDENT) --seed $(strip $(SEED)) --data $(DATA)/test --out $(EVAL)/$(STUDENT)-viterbi
	$(MAKE) --no-print-directory results

# Scaling (seed SEED): pools of SCALES x the labelled set's hours (rendered with `synth --parts
# pool`, the labelled set unchanged), students of SCALE_SIZES; stage 2 minus teacher and minus
# baseline against the pool size, as a table and a PNG (runs/results_scaling).
SCALES ?= 1 4 16
SCALE_SIZES ?= small base
SCALE_HOLDOUT = 0.05   # the share of each pool's songs stage 1 holds out for validation (as 9 of the demo's 180)
# Stage 1 makes the same number of passes over every pool, the demo's 20 (a multiple of 5, the
# validation interval); SCALE_STAGE1_EPOCHS=10 halves the stage-1 compute of every row.
SCALE_STAGE1_EPOCHS ?= 20
L_HOURS = $$($(BIN)/python -c "import csv; print(sum(float(r['duration']) for r in csv.DictReader(open('$(DATA)/train/manifest.csv'))) / 3600)")
SCALE_EVAL = $(RUNS)/eval_scaling/seed$(strip $(SEED))
scaling: label  ## stage 2 minus teacher / baseline for pools of SCALES x L and student sizes SCALE_SIZES
	set -e; $(CHORDKD) evaluate $(TEACHER_SPEC) --names teacher --roles teacher --student btc \
	    --seed $(strip $(SEED)) --data $(DATA)/test --out $(SCALE_EVAL)/teacher; \
	for size in $(SCALE_SIZES); do \
	    $(CHORDKD) fit experiments/baseline.yaml student=$(STUDENT) model.size=$$size $(BASELINE_ARGS) $(ARGS); \
	    $(CHORDKD) evaluate $$($(CHORDKD) fit experiments/baseline.yaml student=$(STUDENT) model.size=$$size \
	        $(BASELINE_ARGS) $(ARGS) --print-run-dir)/checkpoints/best.ckpt --names baseline --roles baseline \
	        --student $(STUDENT) --seed $(strip $(SEED)) --meta size=$$size --data $(DATA)/test \
	        --out $(SCALE_EVAL)/$(STUDENT)-baseline-$$size; done; \
	for n in $(SCALES); do pool=data/scaling/pool$${n}x; cache=$(CACHE)/scaling/pool$${n}x; \
	    test -f $$pool/pool/manifest.csv || $(CHORDKD) synth --preset realistic --parts pool \
	        --pool-hours $$($(BIN)/python -c "print($$n * $(L_HOURS))") --out $$pool; \
	    $(CHORDKD) label --teacher $(TEACHER_SPEC) --audio $$pool/pool --out $$cache; \
	    held=$$($(BIN)/python -c "import csv; n = sum(1 for _ in csv.DictReader(open('$$pool/pool/manifest.csv'))); print(max(3, round(n * $(SCALE_HOLDOUT))))"); \
	    for size in $(SCALE_SIZES); do \
	        s1="student=$(STUDENT) model.size=$$size $(STAGE1_ARGS) data.train=$$pool/pool data.teacher_cache=$$cache data.valid_holdout=$$held trainer.max_epochs=$(SCALE_STAGE1_EPOCHS) $(ARGS)"; \
	        $(CHORDKD) fit experiments/stage1.yaml data.teacher=$(TEACHER_SPEC) $$s1; \
	        init=$$($(CHORDKD) fit experiments/stage1.yaml $$s1 --print-run-dir)/checkpoints/best.ckpt; \
	        s2="student=$(STUDENT) model.size=$$size init=$$init $(STAGE2_ARGS) $(ARGS)"; \
	        $(CHORDKD) fit experiments/stage2.yaml data.teacher=$(TEACHER_SPEC) $$s2; \
	        $(CHORDKD) evaluate $$($(CHORDKD) fit experiments/stage2.yaml $$s2 --print-run-dir)/checkpoints/best.ckpt \
	            --names stage2 --roles stage2 --student $(STUDENT) --seed $(strip $(SEED)) --meta pool=$$n size=$$size \
	            --data $(DATA)/test --out $(SCALE_EVAL)/$(STUDENT)-pool$$n-$$size; done; done
	$(CHORDKD) results --runs $(SCALE_EVAL:%/seed$(strip $(SEED))=%) --curve pool --series size \
	    --out $(RUNS)/results_scaling

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
	    --teacher-cache $(CACHE)/pool data.train=$(DATA)/pool \
	    data.labelled=$(DATA)/train data.valid=$(DATA)/valid data.test=$(DATA)/test $(ARGS)

# Representations (issue 14): on the realistic preset with madmom's CNN as the teacher. The
# probes run on PROBE_CORPUS, harmony-model songs of their own corpus seed that no encoder trained
# on (labelled: chords, key, tempo, instrument), and on the preset's test_scores (composer).
PROBE_DATA ?= data/realistic
PROBE_CORPUS ?= data/probe
# 30-s songs; a quarter of them (by sha1 of the id) are the probes' test songs
PROBE_SONGS ?= 96
SSL_ARGS ?=        # overrides for both pre-training runs, e.g. SSL_ARGS="trainer.max_epochs=5"
SSL_DATA = data.train=$(DATA)/pool data.valid=$(DATA)/valid
ssl_ckpt = $$($(CHORDKD) pretrain experiments/$(1).yaml student=$(STUDENT) $(SSL_DATA) $(SSL_ARGS) --print-run-dir)/checkpoints/best.ckpt
stage2_from = $(call run_dir,stage2,$(STUDENT) init=$(1) $(STAGE2_ARGS))/checkpoints/best.ckpt
baseline_from = $(call run_dir,baseline,$(STUDENT) init=$(1) $(BASELINE_ARGS))/checkpoints/best.ckpt
# the fine-tuning comparison: the stage-2 recipe and the baseline's (from-scratch) recipe, each
# from every initialisation, on the same labelled songs
INIT_ROWS = stage2-from-random stage2-from-ssl stage2-from-ssl_masked stage2-from-stage1 \
    baseline-from-random baseline-from-ssl baseline-from-ssl_masked baseline-from-stage1
STAGE2_SCRATCH_CKPT = $(call run_dir,stage2_scratch,$(STUDENT) $(STAGE2_ARGS))/checkpoints/best.ckpt
PROBE_LAYER ?= 2          # the trained encoders are probed at their last layer and at this block
# each trained encoder's checkpoint, followed by $(1) (@LAYER or nothing)
probe_trained = $(BASELINE_CKPT)$(1) $(STAGE1_CKPT)$(1) $(STAGE2_CKPT)$(1) $(call ssl_ckpt,ssl)$(1) \
    $(call ssl_ckpt,ssl_masked)$(1)
PROBE_TRAINED_NAMES = baseline stage1 stage2 ssl ssl_masked
PROBE_ENCODERS = random:$(STUDENT):small cqt madmom:cnn $(call probe_trained,) \
    $(call probe_trained,@$(strip $(PROBE_LAYER))) --names random cqt teacher \
    $(PROBE_TRAINED_NAMES) $(PROBE_TRAINED_NAMES:%=%@$(strip $(PROBE_LAYER)))

probe: install  ## representations: SSL pre-training, frozen probes of every encoder, fine-tuning from each init (realistic preset)
	test -f $(PROBE_DATA)/test/manifest.csv || $(CHORDKD) synth --preset realistic --out $(PROBE_DATA)
	test -f $(PROBE_CORPUS)/manifest.csv || $(CHORDKD) synth --songs $(PROBE_SONGS) --seconds 30 \
	    --renderer soundfont --seed 4 --out $(PROBE_CORPUS)
	$(MAKE) --no-print-directory probe-encoders DATA=$(PROBE_DATA) TEACHER=madmom

probe-encoders: stage2 baseline  # (make probe) needs DATA=<realistic corpus> TEACHER=madmom
	$(CHORDKD) pretrain experiments/ssl.yaml student=$(STUDENT) $(SSL_DATA) $(SSL_ARGS)
	$(CHORDKD) pretrain experiments/ssl_masked.yaml student=$(STUDENT) $(SSL_DATA) $(SSL_ARGS)
	$(CHORDKD) probe $(PROBE_ENCODERS) --data $(PROBE_CORPUS) --out $(RUNS)/probe/$(STUDENT)/probe \
	    --cache $(RUNS)/probe/embeddings/probe
	$(CHORDKD) probe $(PROBE_ENCODERS) --data $(DATA)/test_scores --tasks key tempo instrument composer \
	    --out $(RUNS)/probe/$(STUDENT)/test_scores --cache $(RUNS)/probe/embeddings/test_scores
	$(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(call ssl_ckpt,ssl) \
	    data.teacher=$(TEACHER_SPEC) $(STAGE2_ARGS) $(ARGS)
	$(CHORDKD) fit experiments/stage2.yaml student=$(STUDENT) init=$(call ssl_ckpt,ssl_masked) \
	    data.teacher=$(TEACHER_SPEC) $(STAGE2_ARGS) $(ARGS)
	$(CHORDKD) fit experiments/stage2_scratch.yaml student=$(STUDENT) data.teacher=$(TEACHER_SPEC) \
	    $(STAGE2_ARGS) $(ARGS)
	for init in $(call ssl_ckpt,ssl) $(call ssl_ckpt,ssl_masked) $(STAGE1_CKPT); do \
	    $(CHORDKD) fit experiments/baseline.yaml student=$(STUDENT) init=$$init $(BASELINE_ARGS) $(ARGS) \
	        || exit 1; done
	$(CHORDKD) evaluate $(STAGE2_SCRATCH_CKPT) $(call stage2_from,$(call ssl_ckpt,ssl)) \
	    $(call stage2_from,$(call ssl_ckpt,ssl_masked)) $(STAGE2_CKPT) $(BASELINE_CKPT) \
	    $(call baseline_from,$(call ssl_ckpt,ssl)) $(call baseline_from,$(call ssl_ckpt,ssl_masked)) \
	    $(call baseline_from,$(STAGE1_CKPT)) \
	    --names $(INIT_ROWS) --roles $(INIT_ROWS) \
	    --student $(STUDENT) --seed $(strip $(SEED)) --data $(DATA)/test --out $(EVAL)/$(STUDENT)-init

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
