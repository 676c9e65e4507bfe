#!/usr/bin/env bash
# The exact-model grid (see README, "Exact models"): samplers x tokens per step x noise x oracle, on CPU,
# each cell one stock `lm_eval` run into $RUNS/<oracle>/<sampler>/t<tokens per step>-noise<sigma>/;
# cells already done are skipped; the report (results/oracle.md) is printed at the end.
#
#   launch/oracle_grid.sh             # run what is not done yet, then print the report
#   DRY_RUN=1 launch/oracle_grid.sh   # print the commands only
#
# Environment (defaults in brackets): SAMPLERS [original random entropy margin info_gain lookum fast_dllm
# eb_sampler], TOKENS_PER_STEP [1 2 4] (steps = answer length / it; fast_dllm and eb_sampler choose their own
# steps and run once per noise level, as t0), NOISES [0 0.5 1] (oracle_noise), ORACLES [sudoku hmm]
# (oracle-sudoku on sudoku_4x4_many, 24 answer tokens; oracle-hmm on oracle_hmm, 8), LIMIT [500],
# BATCH [100: outputs do not depend on it], RUNS [results/runs-oracle], PYTHON [python], DRY_RUN.
set -euo pipefail

SAMPLERS=${SAMPLERS:-original random entropy margin info_gain lookum fast_dllm eb_sampler}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-1 2 4}
NOISES=${NOISES:-0 0.5 1}
ORACLES=${ORACLES:-sudoku hmm}
LIMIT=${LIMIT:-500} BATCH=${BATCH:-100} RUNS=${RUNS:-results/runs-oracle} PYTHON=${PYTHON:-python}

declare -A TASK=([sudoku]=sudoku_4x4_many [hmm]=oracle_hmm) LENGTH=([sudoku]=24 [hmm]=8)
declare -A MODE=([lookum]="mode=info_gain,variant=lookum")

run_cell() {  # oracle sampler tokens_per_step noise
    local oracle=$1 sampler=$2 tokens=$3 noise=$4
    local out="$RUNS/$oracle/$sampler/t$tokens-noise$noise" steps=""
    [ "$tokens" != 0 ] && steps=",steps=$((LENGTH[$oracle] / tokens))"
    local args="pretrained=oracle-$oracle,${MODE[$sampler]:-mode=$sampler}$steps,oracle_noise=$noise"
    local command=("$PYTHON" -m lm_eval --model mdm_infogain --model_args "$args" --tasks "${TASK[$oracle]}"
                   --limit "$LIMIT" --batch_size "$BATCH" --output_path "$out" --log_samples)
    if [ -n "$(find "$out" -name 'results_*.json' 2>/dev/null)" ]; then
        echo "# done: ${command[*]}"
    elif [ -n "${DRY_RUN:-}" ]; then
        echo "${command[*]}"
    else
        echo "${command[*]}" >&2
        "${command[@]}" > /dev/null
    fi
}

for oracle in $ORACLES; do
    for noise in $NOISES; do
        for sampler in $SAMPLERS; do
            case $sampler in
                fast_dllm|eb_sampler) run_cell "$oracle" "$sampler" 0 "$noise" ;;
                *) for tokens in $TOKENS_PER_STEP; do run_cell "$oracle" "$sampler" "$tokens" "$noise"; done ;;
            esac
        done
    done
done
[ -n "${DRY_RUN:-}" ] || "$PYTHON" -m lm_eval_infogain.oracle_report "$RUNS"
