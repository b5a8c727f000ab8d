# bert_tf: `make demo` runs the main job end to end, `make test` runs the test suite.
# Both create .venv and install everything on first use (TensorFlow, tensorflow-text, the test
# peers torch CPU + transformers, and Horovod built from source with Gloo). pip's cache
# (~/.cache/pip, including the built Horovod wheel) makes a second install fast.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SHARED ?= ../shared/data
DATA_DIR ?= $(SHARED)/glue/MRPC
INIT_CHECKPOINT ?= $(SHARED)/models/all-MiniLM-L6-v2
OUTPUT_DIR ?= output
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install horovod test test-slow demo features pretrain-demo bench clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -e ".[test]"
	$(MAKE) horovod
	touch $(STAMP)

install: $(STAMP)

# Horovod 0.28.1 from source against the installed TensorFlow, with Gloo (MPI used if present).
# It needs CMake 3.x: the cmake 4 wheel refuses Horovod's bundled Gloo, so use the system one.
horovod:
	@if ! cmake --version 2>/dev/null | grep -q "version 3\."; then \
	  echo "installing the system CMake 3.x for the Horovod build"; \
	  (apt-get update -qq && apt-get install -y -qq cmake g++) >/dev/null; fi
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 MAKEFLAGS=-j$$(nproc) \
	  $(PIP) install --no-build-isolation "horovod==0.28.1"
	$(PY) -c "import horovod, horovod.tensorflow as hvd; assert hvd.gloo_built(), 'Horovod built without Gloo'; print('horovod', horovod.__version__, 'with Gloo')"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# The main job: fine-tune MRPC from a real pretrained checkpoint, then print dev accuracy and F1.
# Adam with bias correction, the optimizer of Hugging Face's reference run it is compared with
# (Google's AdamW, run_classifier.py's default, scored within 0.3 points of it here, seed 42).
# Offline machines: DATA_DIR=../shared/data/glue/MRPC INIT_CHECKPOINT=../shared/data/models/all-MiniLM-L6-v2
# (the defaults). Leave DATA_DIR empty to download MRPC; INIT_CHECKPOINT may be a preset name.
DTYPE ?= bf16
EPOCHS ?= 3
demo: $(STAMP)
	$(PY) run_classifier.py --task=MRPC --do_train --do_eval \
	  $(if $(DATA_DIR),--data_dir=$(DATA_DIR)) --init_checkpoint=$(INIT_CHECKPOINT) \
	  --output_dir=$(OUTPUT_DIR)/mrpc-$(DTYPE) --dtype=$(DTYPE) --max_seq_length=128 \
	  --train_batch_size=32 --learning_rate=5e-5 --num_train_epochs=$(EPOCHS) --seed=42 \
	  --adam_bias_correction
	@$(PY) -c "import json; r=json.load(open('$(OUTPUT_DIR)/mrpc-$(DTYPE)/eval_results.json')); print(f\"MRPC dev: accuracy {100*r['eval_accuracy']:.2f}%  F1 {100*r['eval_f1']:.2f}  ({r['eval_examples']} examples)\")"

# Features of real sentences (the foundation's demo): extract_features.py on MRPC dev.
features: $(STAMP)
	mkdir -p $(OUTPUT_DIR)
	cut -f4,5 $(SHARED)/glue/MRPC/dev.tsv | tail -n +2 | head -n 64 | sed 's/\t/ ||| /' > $(OUTPUT_DIR)/demo_input.txt
	$(PY) extract_features.py --input_file=$(OUTPUT_DIR)/demo_input.txt \
	  --output_file=$(OUTPUT_DIR)/demo_features.jsonl --overwrite_output \
	  --init_checkpoint=$(INIT_CHECKPOINT) --layers=-1,-2 --max_seq_length=128 --batch_size=16

# The two-phase pre-training recipe scaled to a CPU (BERT-Tiny, configs/pretraining/cpu_tiny_*):
# records at sequence 128 and 512 from the Python documentation corpus, phase 1, phase 2 from
# phase 1's weights, held-out masked-LM accuracy after each, then MRPC fine-tuned from the result.
VOCAB ?= $(SHARED)/vocab/uncased_vocab.txt
CORPUS ?= $(SHARED)/corpus/python_docs_train.txt
HELDOUT ?= $(SHARED)/corpus/python_docs_heldout.txt
PT := $(OUTPUT_DIR)/pretrain-demo
pretrain-demo: $(STAMP)
	for len in 128:20 512:80; do s=$${len%%:*}; p=$${len##*:}; \
	  $(PY) create_pretraining_data.py --input_file=$(CORPUS) --output_file=$(PT)/data/train$$s.tfrecord \
	    --num_output_shards=2 --num_workers=2 --vocab_file=$(VOCAB) --max_seq_length=$$s \
	    --max_predictions_per_seq=$$p --dupe_factor=1 --overwrite_output --progress=false && \
	  $(PY) create_pretraining_data.py --input_file=$(HELDOUT) --output_file=$(PT)/data/heldout$$s.tfrecord \
	    --vocab_file=$(VOCAB) --max_seq_length=$$s --max_predictions_per_seq=$$p --dupe_factor=1 \
	    --overwrite_output --progress=false || exit 1; done
	PHASE1_DATA='$(PT)/data/train128.tfrecord-*' PHASE2_DATA='$(PT)/data/train512.tfrecord-*' \
	HELDOUT1=$(PT)/data/heldout128.tfrecord HELDOUT2=$(PT)/data/heldout512.tfrecord \
	VOCAB=$(VOCAB) PYTHON=$(PY) bash configs/pretraining/two_phase.sh configs/pretraining/cpu_tiny $(PT)
	$(PY) run_classifier.py --task=MRPC --do_train --do_eval --data_dir=$(SHARED)/glue/MRPC \
	  --init_checkpoint=$(PT)/phase2/export/google --output_dir=$(PT)/mrpc --dtype=bf16 \
	  --num_train_epochs=1 --learning_rate=1e-4 --progress=false
	@$(PY) -c "import json; p=json.load(open('$(PT)/phase2/eval_results.json')); r=json.load(open('$(PT)/mrpc/eval_results.json')); print(f\"held-out masked-LM accuracy {100*p['masked_lm_accuracy']:.2f}%; MRPC dev accuracy {100*r['eval_accuracy']:.2f}% from it (BERT-Tiny, 340 steps: this checks the pipeline end to end; MRPC's constant answer gives 68.38%, a model worth using needs the real recipe)\")"

bench: $(STAMP)
	$(PY) bench/bench_tokenization.py

clean:
	rm -rf $(VENV) build *.egg-info $(OUTPUT_DIR)
