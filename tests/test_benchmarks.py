"""Benchmarks that score the demo data itself: duration + attack baseline, and the cross-domain benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from guitar_cls.benchmarks import domain_gap, duration
from guitar_cls.data.schema import read_metadata


def test_attack_features_are_read_from_each_event(tiny_demo):
    df = read_metadata(tiny_demo)
    feats = duration.attack_features(df, tiny_demo.parent)
    assert feats.shape == (len(df), 4) and np.all(np.isfinite(feats))
    assert np.all(feats[:, 0] <= 0.25) and np.all(feats[:, 1] >= 1.0)  # time to peak inside the window; crest >= 1
    assert np.all((feats[:, 2] >= 0) & (feats[:, 2] <= 1))
    assert len(np.unique(feats[:, 1].round(3))) > len(df) // 2  # measured per event, not a constant
    both = duration.duration_baseline(df, folds=3, extra=feats)
    assert 0.0 <= both["balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_domain_gap_smoke_trains_on_one_source_and_tests_on_the_other(ray_local, capsys):
    assert domain_gap.main(["--smoke-test", "--members", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("synth_to_samples", "samples_to_synth"):
        assert 0.0 <= line[f"{key}_balanced_accuracy"] <= 1.0
        assert set(line[f"{key}_recall"]) == {"harmonic", "dead_note", "general_note"}
        assert set(line[f"{key}_single_model_recall"]) == {"harmonic", "dead_note", "general_note"}
        # two models of their own seeds; the main figure is their mean's, *_single_model_* the first's
        members = line["details"][key]["members"]
        assert [m["seed"] for m in members] == [42, 43]
        assert members[0]["balanced_accuracy"] == line[f"{key}_single_model_balanced_accuracy"]
        assert line[f"{key}_balanced_accuracy"] == line["details"][key]["balanced_accuracy"]
    a, b = line["details"]["synth_to_samples"], line["details"]["samples_to_synth"]
    # each direction tests on every event of the other source, which the other direction trains and validates on
    assert a["n_test"] == b["n_train"] + b["n_val"] and b["n_test"] == a["n_train"] + a["n_val"]


def test_domain_gap_runs_on_a_demo_set_of_its_own_size_beside_the_default_one():
    from guitar_cls.config import load_config

    cfg = load_config(None, [("data.demo_dir", "/data/demo/")])
    bigger = domain_gap.demo_of_size(cfg, 480)
    assert (bigger.data.demo_dir, bigger.data.demo_recordings) == ("/data/demo-480", 480)
    assert (cfg.data.demo_dir, cfg.data.demo_recordings) == ("/data/demo/", 120)  # the default set is left alone
    assert domain_gap.demo_of_size(cfg, 120) is cfg  # the default size: the default demo set itself
    from guitar_cls.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.demo_recordings: 1 is outside the allowed range"):
        domain_gap.demo_of_size(cfg, 1)


def test_domain_gap_refuses_fewer_than_one_member(capsys):
    with pytest.raises(SystemExit):
        domain_gap.main(["--members", "0"])
    assert "--members must be at least 1, got 0" in capsys.readouterr().err
