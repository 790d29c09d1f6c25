"""Does the lineage's own proposer beat random search? `recursive experiment compare` with
proposers self, random and fixed at equal compute, then two lines:

    ratio: X   self's mean final-generation held-out loss over random's (< 1: self better)
    p: Y       one-sided exact Wilcoxon signed-rank test paired by seed (H1: self's loss lower)

    python bench/self_vs_random.py --seeds 5 [--experiment smoke] [--out DIR] [hydra overrides...]

Re-running with the same arguments skips finished lineages (the compare command's rule), so
an interrupted run goes on where it stopped. Everything else (per generation, per baseline,
intervals) is in DIR/report.json and the table the command prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="5", help="a count (seeds 0..N-1) or a comma list")
    ap.add_argument("--experiment", default="smoke")
    ap.add_argument("--out", default=None, help="default: runs/self_vs_random_<experiment>")
    ap.add_argument("overrides", nargs="*", help="more hydra overrides for every lineage (P:key=value: proposer P only)")
    args = ap.parse_args(argv)
    out = Path(args.out or f"runs/self_vs_random_{args.experiment}")
    cmd = [sys.executable, "-m", "recursive.cli", "experiment", "compare", "--proposers", "self,random,fixed",
           "--seeds", str(args.seeds), "--out", str(out), f"experiment={args.experiment}", *args.overrides]
    rc = subprocess.run(cmd).returncode
    report_path = out / "report.json"
    if not report_path.exists():
        print(f"self_vs_random: no {report_path} (the compare command exited {rc})", file=sys.stderr)
        return rc or 1
    report = json.loads(report_path.read_text())
    final = report["final"]
    ratio, p = report["ratio_final_vs_random"], final["vs"]["random"]["wilcoxon_p"]
    n = final["vs"]["random"]["n"]
    print(f"generation {final['generation']}, {n} seeds paired; report: {report_path}")
    print(f"ratio: {'nan' if ratio is None else f'{ratio:.4f}'}")
    print(f"p: {'nan' if p is None else f'{p:.4f}'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
