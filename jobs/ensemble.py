"""Ensemble a finished sweep's top trials, test it beside its best member, register it as a pyfunc version.

    python jobs/ensemble.py --sweep NAME [--top K] [--method mean|logit|greedy] [--output-dir outputs]
                            [--no-register] [--promote]

mean: average of the members' probabilities; logit: of their log-probabilities; greedy: Caruana's forward selection
with replacement on the validation split (see guitar_cls/ensemble.py). The ensemble is logged as a nested run of the
sweep's MLflow parent run and registered under the same model name; it takes `champion` only by the rule any version
does. Prints one JSON line: test score of the ensemble and of its best member, gain, latency of both (ms per 1-s
snippet, one thread), the registered version. The outcome is also written to OUTPUT_DIR/sweeps/NAME/ensemble.json.
"""

from __future__ import annotations

import argparse
import json
import sys

from guitar_cls.ensemble import METHODS, build_ensemble
from guitar_cls.logs import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="sweep name (a folder under OUTPUT_DIR/sweeps)")
    parser.add_argument("--top", type=int, default=3, help="number of best trials to ensemble (default 3)")
    parser.add_argument("--method", choices=METHODS, default="mean", help="how members are combined (default mean)")
    parser.add_argument("--output-dir", default="outputs", help="the sweep's logging.output_dir (default: outputs)")
    parser.add_argument("--no-register", action="store_true", help="evaluate only: no MLflow run, no model version")
    parser.add_argument("--promote", action="store_true", help="may take champion from a model of other data/splits")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        out = build_ensemble(
            args.sweep,
            output_dir=args.output_dir,
            top=args.top,
            method=args.method,
            register=not args.no_register,
            promote=args.promote,
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    metric, reg = out["metric"], out.get("registration") or {}
    line = {
        "ensemble": f"top-{out['top']} {out['method']}",
        "members": {m["trial_id"]: round(m["weight"], 4) for m in out["members"]},
        "test_balanced_accuracy": out["test"]["balanced_accuracy"],
        "best_member_test_balanced_accuracy": out["best_member_test"]["balanced_accuracy"],
        f"gain_{metric}": out["gain"],
        "latency_ms": out["latency_ms"],
        "best_member_latency_ms": out["best_member_latency_ms"],
        "version": reg.get("version"),
        "champion": reg.get("champion"),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
