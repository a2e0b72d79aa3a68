"""Write a finished sweep's report (report.md + PNGs); prints one JSON line with the headline numbers.

    python jobs/report.py --sweep NAME --out DIR [--output-dir outputs] [--storage DIR] [--space FILE]
                          [--metadata M] [--audio-root R] [--no-evaluate] [--top N] [--overwrite]

Recommendations, quality bars, leaderboard, parameter plots and importance, learning curves, the accuracy/latency
Pareto front and the champion's test-split evaluation (DIR/evaluation); see guitar_cls/report/. DIR may be new,
empty or a previous report; any other folder is refused unless --overwrite (which keeps every file not ours).
"""

from __future__ import annotations

import argparse
import json
import sys

from guitar_cls.logs import setup_logging
from guitar_cls.outputs import OutputFolderError
from guitar_cls.report import ReportError, SweepNotFound, build_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="sweep name (a folder under OUTPUT_DIR/sweeps)")
    parser.add_argument("--out", required=True, help="report folder (new, empty or a previous report)")
    parser.add_argument("--output-dir", default="outputs", help="the sweep's logging.output_dir (default: outputs)")
    parser.add_argument("--storage", help="Tune storage path (default: found from the checkpoints)")
    parser.add_argument("--space", help="search-space YAML (default: the one the sweep recorded)")
    parser.add_argument("--metadata", help="metadata table to evaluate on (default: the one the sweep recorded)")
    parser.add_argument("--audio-root", help="audio folder of --metadata (default: the table's folder)")
    parser.add_argument("--no-evaluate", action="store_true", help="use summary.json's test metrics instead")
    parser.add_argument("--top", type=int, default=10, help="leaderboard rows shown (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (keeps other files)")
    args = parser.parse_args()
    setup_logging()
    keys = ("output_dir", "storage", "space", "metadata", "audio_root", "top", "overwrite")
    opts = {k: getattr(args, k) for k in keys}
    try:
        report = build_report(args.sweep, args.out, evaluate_champion=not args.no_evaluate, **opts)
    except (SweepNotFound, ReportError, OutputFolderError) as e:
        sys.exit(f"error: {e}")
    front = report.front["trial_id"].tolist()
    met = [b["name"] for b in report.bars if b["passed"]]
    best = report.sweep.summary.get("best_trial")
    print(json.dumps({"report": str(report.path), "best_trial": best, "pareto_front": front, "bars_met": met}))


if __name__ == "__main__":
    main()
