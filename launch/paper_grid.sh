#!/usr/bin/env bash
# Models x tasks x samplers with the Info-Gain paper's generation settings, one
# `accelerate launch -m lm_eval --model mdm_infogain ...` per cell, then the leaderboard.
#
#   launch/paper_grid.sh                                  # everything, on one GPU
#   DRY_RUN=1 launch/paper_grid.sh                        # print the commands, run nothing
#   MODELS=llada TASKS=gsm8k SAMPLERS="info_gain original" CONFIG=launch/ngpu.yaml LIMIT=50 launch/paper_grid.sh
#
# Environment (defaults in brackets):
#   MODELS     pretrained values: short names, hub ids or directories [llada mmada dream sdar trado]
#   TASKS      [gsm8k minerva_math500 humaneval_instruct mbpp_instruct sudoku_4x4 countdown creative_writing]
#   SAMPLERS   [info_gain lookum original entropy margin fast_dllm eb_sampler]
#              (pc_sampler also works given EXTRA_MODEL_ARGS=pc_baseline=<table>)
#   CONFIG     accelerate config file [launch/1gpu.yaml next to this script]
#   RUNS       where runs go, one folder per cell: RUNS/<model>/<task>/<sampler>/ [results/runs]
#   BOARD      leaderboard output folder [results]
#   LIMIT      lm-eval --limit, unset for whole tasks
#   EXTRA_MODEL_ARGS  appended to every --model_args, e.g. eos_penalty=4,pad_penalty=4 (the paper's
#              Info-Gain runs) or pc_baseline=freq.json
#   EXTRA_ARGS more lm_eval arguments, split on whitespace, e.g. "--batch_size 4"
#   SETTINGS   model_args that replace the paper's per-task generation settings below; set but empty:
#              none, so each checkpoint's generation_config.json defaults apply (launch/tiny_grid.sh)
#   CACHE      use_cache of every sampler [prefix]
#   CHAT_TEMPLATE=0  no --apply_chat_template (models trained on raw prompts) [1]
#   METADATA   lm_eval --metadata JSON, e.g. '{"countdown_max_number": 9}' (task variants)
#   LEADERBOARD=0  skip the leaderboard at the end [1]
#   PYTHON     interpreter for the leaderboard [python]
#   DRY_RUN=1  print each command (shell-quoted, one a line) instead of running it; a finished cell's
#              command is printed too, after "# done: "
#   FORCE=1    rerun finished cells too (each one's old run folder is deleted first)
#
# Settings (TASKS.md): reasoning and code gen_length=256 steps=256 block_length=32 temperature=0;
# creative writing gen_length=512 steps=512 block_length=32 temperature=0.7. The paper gives none of
# its own for sudoku_4x4 and countdown; they get the reasoning settings. Every sampler runs with
# use_cache=prefix (CACHE); Info-Gain with candidate_number=8 position_temperature=0.2 threshold=0.8.
# All models are instruct/chat checkpoints: --apply_chat_template everywhere, zero-shot gsm8k and
# minerva_math500; the code tasks run their programs (HF_ALLOW_CODE_EVAL=1, --confirm_run_unsafe_code).
# Each run writes lm-eval's results and samples (--log_samples) and the per-request
# decode stats (decode_stats.jsonl) into its folder. A folder that already holds a results_*.json is
# skipped (FORCE=1 reruns it), so an interrupted grid resumes where it stopped (a half-written
# decode_stats.jsonl of an unfinished run is removed first).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
read -ra models <<< "${MODELS:-llada mmada dream sdar trado}"
read -ra tasks <<< "${TASKS:-gsm8k minerva_math500 humaneval_instruct mbpp_instruct sudoku_4x4 countdown creative_writing}"
read -ra samplers <<< "${SAMPLERS:-info_gain lookum original entropy margin fast_dllm eb_sampler}"
read -ra extra_args <<< "${EXTRA_ARGS:-}"
config=${CONFIG:-$here/1gpu.yaml}
runs=${RUNS:-results/runs}
board=${BOARD:-results}
python=${PYTHON:-python}
dry_run=${DRY_RUN:-0}
force=${FORCE:-0}
cache=${CACHE:-prefix}
chat_template=()
[[ ${CHAT_TEMPLATE:-1} == 0 ]] || chat_template=(--apply_chat_template)
metadata=()
[[ -z ${METADATA:-} ]] || metadata=(--metadata "$METADATA")

fail() {
    echo "paper_grid.sh: $*" >&2
    exit 2
}

task_settings() {  # the generation settings of a task, as model_args
    if [[ -n ${SETTINGS+set} ]]; then
        echo "$SETTINGS"
        return
    fi
    case $1 in
        gsm8k* | minerva_math500* | humaneval* | mbpp* | sudoku_4x4* | countdown*)
            echo "gen_length=256,steps=256,block_length=32,temperature=0" ;;
        creative_writing*)
            echo "gen_length=512,steps=512,block_length=32,temperature=0.7" ;;
        *)
            fail "no paper settings for task '$1'; known: gsm8k, minerva_math500, humaneval, mbpp (and their" \
                 "variants), sudoku_4x4, countdown, creative_writing" ;;
    esac
}

task_args() {  # lm_eval arguments a task needs
    case $1 in
        gsm8k* | minerva_math500*) echo "--num_fewshot 0" ;;
        humaneval* | mbpp*) echo "--confirm_run_unsafe_code" ;;
        *) echo "" ;;
    esac
}

sampler_settings() {  # a sampler's model_args
    case $1 in
        info_gain) echo "mode=info_gain,candidate_number=8,position_temperature=0.2,threshold=0.8,use_cache=$cache" ;;
        lookum) echo "mode=info_gain,variant=lookum,candidate_number=8,position_temperature=0.2,threshold=0.8,use_cache=$cache" ;;
        fast_dllm) echo "mode=fast_dllm,threshold=0.8,use_cache=$cache" ;;
        original | random | entropy | margin | eb_sampler | pc_sampler) echo "mode=$1,use_cache=$cache" ;;
        *) fail "unknown sampler '$1'; known: info_gain lookum original random entropy margin fast_dllm eb_sampler pc_sampler" ;;
    esac
}

show() {  # one command on one line, each word quoted only where the shell needs it
    local word line=""
    for word in "$@"; do
        [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]] || printf -v word '%q' "$word"
        line+="${line:+ }$word"
    done
    echo "$line"
}

[[ -f $config ]] || fail "accelerate config '$config' not found"
for model in "${models[@]}"; do
    for task in "${tasks[@]}"; do
        settings=$(task_settings "$task")
        read -ra needs <<< "$(task_args "$task")"
        code_env=()
        case $task in humaneval* | mbpp*) code_env=(env HF_ALLOW_CODE_EVAL=1) ;; esac
        for sampler in "${samplers[@]}"; do
            sampler_args=$(sampler_settings "$sampler")
            out="$runs/${model//\//__}/$task/$sampler"
            model_args="pretrained=$model,${settings:+$settings,}$sampler_args${EXTRA_MODEL_ARGS:+,$EXTRA_MODEL_ARGS}"
            model_args+=",decode_stats=$out/decode_stats.jsonl"
            command=("${code_env[@]}" accelerate launch --config_file "$config" -m lm_eval --model mdm_infogain
                     --model_args "$model_args" --tasks "$task" "${chat_template[@]}" "${metadata[@]}"
                     --output_path "$out" --log_samples ${LIMIT:+--limit "$LIMIT"} "${needs[@]}" "${extra_args[@]}")
            done_before=0
            compgen -G "$out/*/results_*.json" > /dev/null && done_before=1
            if [[ $done_before == 1 && $force != 1 ]]; then
                echo "skip (done; FORCE=1 reruns it): $out" >&2
                [[ $dry_run == 1 ]] && echo "# done: $(show "${command[@]}")"
                continue
            fi
            if [[ $dry_run == 1 ]]; then
                show "${command[@]}"
                continue
            fi
            [[ $done_before == 1 ]] && rm -rf "$out"  # FORCE=1: the cell's old results give way to the new run
            mkdir -p "$out"
            rm -f "$out"/decode_stats.jsonl "$out"/decode_stats.jsonl.rank*
            "${command[@]}"
        done
    done
done

leaderboard=("$python" -m lm_eval_infogain.leaderboard "$runs" -o "$board")
if [[ ${LEADERBOARD:-1} == 0 ]]; then
    exit 0
elif [[ $dry_run == 1 ]]; then
    show "${leaderboard[@]}"
else
    "${leaderboard[@]}"
fi
