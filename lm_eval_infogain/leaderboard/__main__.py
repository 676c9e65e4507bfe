"""python -m lm_eval_infogain.leaderboard"""

from lm_eval_infogain.leaderboard.cli import main

main()
