"""results/oracle.md holds what `python -m lm_eval_infogain.oracle_report` prints on the committed grid runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_results_oracle_md_holds_what_the_report_prints_on_the_committed_runs():
    text = (ROOT / "results" / "oracle.md").read_text()
    report = text.split("<!-- report -->\n", 1)[1].split("<!-- /report -->", 1)[0]
    printed = subprocess.run([sys.executable, "-m", "lm_eval_infogain.oracle_report", "results/runs-oracle"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    assert report == printed
