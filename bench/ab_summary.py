"""One line per stage-2 run of bench/ddp_settings_ab.sh and bench/ddp_variants_ab.sh.

``python bench/ab_summary.py RESULTS_DIR LABEL``: stage 2 seconds, ms per optimizer step by epoch,
epoch losses and phases of the run's result file; exit status 3 when the run trained the prepared
teacher again (its ``teacher`` phase took more than 5 s), i.e. the comparison is not the intended one.
"""

from __future__ import annotations

import glob
import json
import sys


def main(results: str, label: str) -> int:
    r = json.load(open(glob.glob(results + "/**/seed0-*.json", recursive=True)[0]))
    per = [round(1e3 * h["steps_s"] / h["steps"], 2) for h in r["history"]]
    print(f"{label:10s} stage 2 {r['elapsed_s']:6.2f} s; ms/step by epoch {per}; "
          f"losses {[round(h['train']['loss'], 6) for h in r['history']]}; "
          f"phases {({k: round(v, 2) for k, v in r['phases_s'].items()})}", flush=True)
    if r["phases_s"].get("teacher", 0) > 5:
        print("  the prepared teacher was not found (trained again)", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
