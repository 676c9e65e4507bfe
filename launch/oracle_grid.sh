#!/usr/bin/env bash
# The exact-model grid (see README, "Exact models"): samplers x tokens per step x noise x oracle, on CPU,
# each cell one stock `lm_eval` run into $RUNS/<oracle>/<sampler>/t<tokens per step>-noise<sigma>/;
# cells already done are skipped; the report (results/oracle.md) is printed at the end.
#
#   launch/oracle_grid.sh             # run what is not done yet, then print the report
#   DRY_RUN=1 launch/oracle_grid.sh   # print the commands only
#
# The cells of one oracle run one after the other in one process (python -m lm_eval_infogain.oracle_grid:
# lm-eval's own CLI code, the same files as the printed `lm_eval` command, without its start-up per cell),
# on one thread; the two oracles' processes run side by side.
#
# pc_sampler reads a token-frequency table per oracle, $RUNS/pc-baseline/<oracle>.json, counted by
# `python -m lm_eval_infogain.pc_baseline` over that oracle's task documents (prompt and target, the
# oracles' tokenizer is tiny-llada-sudoku's); it is built here when missing.
#
# Environment (defaults in brackets): SAMPLERS [original random entropy margin info_gain lookum pc_sampler
# fast_dllm eb_sampler], TOKENS_PER_STEP [1 2 4] (steps = answer length / it; fast_dllm and eb_sampler
# choose their own steps and run once per noise level, as t0), NOISES [0 0.5 1] (oracle_noise), ORACLES
# [sudoku hmm] (oracle-sudoku on sudoku_4x4_many, 24 answer tokens; oracle-hmm on oracle_hmm, 8), LIMIT
# [500], BATCH [100: outputs do not depend on it], RUNS [results/runs-oracle], PYTHON [python], DRY_RUN.
set -euo pipefail

SAMPLERS=${SAMPLERS:-original random entropy margin info_gain lookum pc_sampler fast_dllm eb_sampler}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-1 2 4}
NOISES=${NOISES:-0 0.5 1}
ORACLES=${ORACLES:-sudoku hmm}
LIMIT=${LIMIT:-500} BATCH=${BATCH:-100} RUNS=${RUNS:-results/runs-oracle} PYTHON=${PYTHON:-python}

declare -A TASK=([sudoku]=sudoku_4x4_many [hmm]=oracle_hmm) LENGTH=([sudoku]=24 [hmm]=8)

mode_args() {  # oracle sampler
    case $2 in
        lookum) echo "mode=info_gain,variant=lookum" ;;
        pc_sampler) echo "mode=pc_sampler,pc_baseline=$RUNS/pc-baseline/$1.json" ;;
        *) echo "mode=$2" ;;
    esac
}

cell() {  # oracle sampler tokens_per_step noise: the cell's lm_eval arguments, or a "# done" line
    local oracle=$1 sampler=$2 tokens=$3 noise=$4
    local out="$RUNS/$oracle/$sampler/t$tokens-noise$noise" steps=""
    [ "$tokens" != 0 ] && steps=",steps=$((LENGTH[$oracle] / tokens))"
    local mode args
    mode=$(mode_args "$oracle" "$sampler")
    args="pretrained=oracle-$oracle,$mode$steps,oracle_noise=$noise"
    local arguments="--model mdm_infogain --model_args $args --tasks ${TASK[$oracle]} --limit $LIMIT"
    arguments+=" --batch_size $BATCH --output_path $out --log_samples"
    if [ -n "$(find "$out" -name 'results_*.json' 2>/dev/null)" ]; then
        echo "# done: lm_eval $arguments"
    else
        echo "$arguments"
    fi
}

cells() {  # oracle: its cells, in order
    for noise in $NOISES; do
        for sampler in $SAMPLERS; do
            case $sampler in
                fast_dllm|eb_sampler) cell "$1" "$sampler" 0 "$noise" ;;
                *) for tokens in $TOKENS_PER_STEP; do cell "$1" "$sampler" "$tokens" "$noise"; done ;;
            esac
        done
    done
}

pc_baseline() {  # oracle: build its pc_sampler table when missing
    local table="$RUNS/pc-baseline/$1.json" folder
    [ -f "$table" ] && return
    mkdir -p "$RUNS/pc-baseline"
    folder=$(mktemp -d)  # the corpus file's name is the table's "source": the task's
    "$PYTHON" -m lm_eval_infogain.oracle_grid --corpus "${TASK[$1]}" > "$folder/${TASK[$1]}.txt"
    "$PYTHON" -m lm_eval_infogain.pc_baseline --tokenizer tiny-llada-sudoku --input "$folder/${TASK[$1]}.txt" \
        --output "$table"
    rm -r "$folder"
}

if [ -n "${DRY_RUN:-}" ]; then
    for oracle in $ORACLES; do cells "$oracle" | sed '/^#/!s/^/lm_eval /'; done
    exit 0
fi
pids=()
for oracle in $ORACLES; do
    [[ " $SAMPLERS " == *" pc_sampler "* ]] && pc_baseline "$oracle"
    cells "$oracle" | grep -v "^#" | "$PYTHON" -m lm_eval_infogain.oracle_grid &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$PYTHON" -m lm_eval_infogain.oracle_report "$RUNS"
