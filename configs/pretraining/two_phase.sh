#!/usr/bin/env bash
# The two-phase BERT pre-training recipe as one command: phase 1 (sequence 128), then phase 2
# (sequence 512) starting from phase 1's exported weights.
#
#   PHASE1_DATA='data/seq128/*.tfrecord' PHASE2_DATA='data/seq512/*.tfrecord' \
#   VOCAB=vocab.txt NP=8 bash configs/pretraining/two_phase.sh configs/pretraining/bert_large out/large
#
# RECIPE names the flag files RECIPE_phase1.flags and RECIPE_phase2.flags. NP is the number of
# Horovod workers (one per GPU; 1 = a plain process), HOSTS their hosts for horovodrun -H
# (e.g. node1:8,node2:8,...: 8 nodes x 8 GPUs is NP=64); the recipe's --global_batch_size holds
# whatever NP is, through accumulation. HELDOUT1 / HELDOUT2: held-out records to evaluate each
# phase on (optional). Arguments after OUTPUT_DIR go to both phases (e.g. --dtype=bf16).
# Run it from the repository root (the flag files name configs/ by relative paths). Rerunning
# the same command resumes where it stopped: a finished phase takes no further step.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
RECIPE=$1 OUT=$2
shift 2
: "${PHASE1_DATA:?set PHASE1_DATA to phase 1 records (sequence 128)}"
: "${PHASE2_DATA:?set PHASE2_DATA to phase 2 records (sequence 512)}"
: "${VOCAB:?set VOCAB to the vocab.txt the records were written with}"
NP=${NP:-1}
PYTHON=${PYTHON:-python}
test -f run_pretraining.py || { echo "run from the bert_tf repository root" >&2; exit 2; }
for phase in 1 2; do
  test -f "${RECIPE}_phase${phase}.flags" || { echo "no ${RECIPE}_phase${phase}.flags" >&2; exit 2; }
done

launch() {
  if [ "$NP" -gt 1 ]; then
    horovodrun -np "$NP" ${HOSTS:+-H "$HOSTS"} "$PYTHON" run_pretraining.py --use_horovod "$@"
  else
    "$PYTHON" run_pretraining.py "$@"
  fi
}

phase() {  # phase N DATA HELDOUT [flags...]
  local n=$1 data=$2 heldout=$3
  shift 3
  local evaluation=()
  if [ -n "$heldout" ]; then evaluation=(--do_eval "--eval_input_file=$heldout"); fi
  echo "== phase $n: $(grep -m1 -o -- '--max_seq_length=[0-9]*' "${RECIPE}_phase${n}.flags")," \
       "$NP worker(s), output $OUT/phase$n"
  launch "--flagfile=${RECIPE}_phase${n}.flags" "--input_file=$data" "--vocab_file=$VOCAB" \
         "--output_dir=$OUT/phase$n" --do_train "${evaluation[@]}" "$@"
}

phase 1 "$PHASE1_DATA" "${HELDOUT1:-}" "$@"
phase 2 "$PHASE2_DATA" "${HELDOUT2:-}" "--init_checkpoint=$OUT/phase1/export/google" "$@"
echo "== done: $OUT/phase2/export/google (Google TF1) and $OUT/phase2/export/huggingface"
