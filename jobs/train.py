"""Train one configuration with Ray Train and print the test metrics as a JSON line.

python jobs/train.py [--config FILE] [--data TABLE [--audio-root DIR] ...] [--set training.learning_rate=3e-4 ...]
                     [--smoke-test]

--data and --audio-root repeat to train on several tables together (see jobs/sweep.py).
"""

from __future__ import annotations

import argparse
import json

from guitar_cls.config import load_config
from guitar_cls.data.source import data_overrides
from guitar_cls.logs import setup_logging
from guitar_cls.train.run import train
from guitar_cls.train.smoke import smoke_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file updating the package defaults")
    parser.add_argument("--data", action="append", default=[], help="metadata table (CSV/Parquet, or demo); repeat")
    parser.add_argument("--audio-root", action="append", default=[], help="folder of a table's source_audio paths")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    parser.add_argument("--name", help="run name (default: train-<timestamp>)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny data, tiny model, one epoch, CPU")
    args = parser.parse_args()
    try:
        data = data_overrides(args.data, args.audio_root)
    except ValueError as e:
        parser.error(str(e))
    overrides = [*(smoke_overrides() if args.smoke_test else ()), *data, *args.set]
    cfg = load_config(args.config, overrides)
    setup_logging(cfg.logging.level)
    summary = train(cfg, name=args.name)
    test = summary.pop("test")
    line = {**summary, **{f"test/{k}": v for k, v in test.items()}}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
