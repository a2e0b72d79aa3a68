"""Run a hyperparameter sweep described by a YAML search space (local Ray, demo data and sqlite MLflow by default).

    python jobs/sweep.py --space search_spaces/arch.yaml [--data metadata.csv --audio-root DIR ...] [--name NAME]
                         [--resume] [--set key=value ...] [--no-register] [--promote] [--smoke-test]
                         [--num-samples N] [--time-budget SECONDS] [--refit-epochs N] [--refit-members N]

After the search the picked trial's configuration trains again for the space's `budget.refit_epochs` (arch, augment
and features: 30) on the same splits, `budget.refit_members` times with training seeds seed, seed+1, ... (arch,
augment and features: 3); the mean of the members' probabilities is tested and registered when it scores better on
validation than the trial (on recordings unlike the training data it transfers better than one model; README).

--data and --audio-root repeat to train on several tables together (roots pair with tables in order; one root is
shared by all tables but `demo`, the demo set). With RAY_ADDRESS set (as inside `ray job submit`) it joins that cluster.
"""

from __future__ import annotations

import argparse
import json
import sys

from guitar_cls.data.source import data_overrides
from guitar_cls.logs import setup_logging
from guitar_cls.tune.sweep import SweepDataChanged, SweepInterrupted, SweepNameInUse, run_sweep

SMOKE_SPACE = "search_spaces/smoke.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=None, help="search-space YAML (see search_spaces/README.md)")
    parser.add_argument("--data", action="append", default=[], help="metadata table (CSV/Parquet, or demo); repeat")
    parser.add_argument("--audio-root", action="append", default=[], help="folder of a table's source_audio paths")
    parser.add_argument("--name", help="sweep name (default: the space's name)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    parser.add_argument("--no-register", action="store_true", help="do not register the best model")
    parser.add_argument(
        "--promote", action="store_true", help="the best model becomes champion even if that one used other data"
    )
    parser.add_argument("--num-samples", type=int, help="number of trials (replaces the space's budget)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop starting/running trials after")
    parser.add_argument(
        "--refit-epochs", type=int, metavar="N", help="train the picked trial again for N epochs (0: no refit)"
    )
    parser.add_argument(
        "--refit-members", type=int, metavar="N", help="refit N models (seeds seed..seed+N-1); their mean is registered"
    )
    parser.add_argument("--smoke-test", action="store_true", help=f"run {SMOKE_SPACE} (tiny, CPU)")
    args = parser.parse_args()
    if not args.space and not args.smoke_test:
        parser.error("--space is required (or --smoke-test)")
    try:
        overrides = [*args.set, *data_overrides(args.data, args.audio_root)]
    except ValueError as e:
        parser.error(str(e))
    setup_logging()
    try:
        summary = run_sweep(
            args.space or SMOKE_SPACE,
            overrides=overrides,
            name=args.name,
            resume=args.resume,
            register=not args.no_register,
            num_samples=args.num_samples,
            time_budget_s=args.time_budget,
            promote=args.promote,
            refit_epochs=args.refit_epochs,
            refit_members=args.refit_members,
        )
    except SweepInterrupted as e:
        print(e, file=sys.stderr)
        sys.exit(130)
    except (SweepNameInUse, SweepDataChanged) as e:
        print(f"sweep.py: {e}", file=sys.stderr)
        sys.exit(2)
    board = summary.pop("leaderboard")
    print(board.drop(columns=["checkpoint_path"]).to_string(index=False, max_colwidth=40))
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
