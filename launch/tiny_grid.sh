#!/usr/bin/env bash
# The paper-like grid on the bundled trained tiny models, on CPU: each model on the task it was trained
# for, with every sampler, through launch/paper_grid.sh (the same commands, skipping and leaderboard).
#
#   launch/tiny_grid.sh              # run what is not done yet, then the leaderboard
#   DRY_RUN=1 launch/tiny_grid.sh    # print the commands, run nothing (finished cells after "# done: ")
#   FORCE=1 launch/tiny_grid.sh      # rerun every cell, finished ones included
#   LIMIT=500 RUNS=results/runs-500 BOARD=results/runs-500 launch/tiny_grid.sh   # every test document
#
# Environment (defaults in brackets): SAMPLERS [original random info_gain entropy margin fast_dllm],
# LIMIT [100], CACHE [none], EXTRA_ARGS [--batch_size 50: outputs do not depend on it], RUNS [results/runs],
# BOARD [results], PYTHON, DRY_RUN, FORCE as for paper_grid.sh.
# The models' generation_config.json sets gen_length, steps and block_length (their answer length, one
# token per step); they were trained on raw prompts, so no chat template. tiny-llada-countdown was
# trained on the task's small-number variant and is evaluated on it (COUNTDOWN_METADATA).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COUNTDOWN_METADATA='{"countdown_max_number":9,"countdown_max_target":20}'
export SAMPLERS=${SAMPLERS:-original random info_gain entropy margin fast_dllm}
export LIMIT=${LIMIT:-100} CACHE=${CACHE:-none} CONFIG=${CONFIG:-$here/cpu.yaml} SETTINGS="" CHAT_TEMPLATE=0
export EXTRA_ARGS=${EXTRA_ARGS:---batch_size 50}

MODELS=tiny-llada-sudoku TASKS=sudoku_4x4 LEADERBOARD=0 "$here/paper_grid.sh"
MODELS=tiny-llada-countdown TASKS=countdown METADATA=$COUNTDOWN_METADATA "$here/paper_grid.sh"
