"""Config loading: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from guitar_cls.config import Config, ConfigError, config_from_dict, load_config


def test_defaults_are_the_briefs():
    cfg = load_config()
    assert isinstance(cfg, Config)
    f = cfg.features
    assert (f.name, f.n_fft, f.hop_length, f.n_mels, f.f_min, f.f_max) == ("logmel", 2048, 128, 128, 80.0, 8000.0)
    assert cfg.data.sample_rate == 22050 and (cfg.data.min_duration, cfg.data.max_duration) == (0.5, 3.0)
    assert (cfg.splits.train, cfg.splits.val, cfg.splits.test, cfg.splits.seed) == (0.7, 0.15, 0.15, 42)


def test_dotted_overrides_are_parsed_as_yaml_values():
    cfg = load_config(
        None,
        [
            "training.learning_rate=3e-4",
            "model.params.blocks=[1, 2, 2, 1]",
            "augmentation.mixup.enabled=true",
            "data.metadata=/x/meta.csv",
        ],
    )
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.model.params == {"blocks": [1, 2, 2, 1]}
    assert cfg.augmentation.mixup.enabled is True
    assert cfg.data.metadata == "/x/meta.csv"


def test_yaml_file_updates_defaults_and_round_trips(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"training": {"epochs": 3}, "features": {"name": "cqt"}}))
    cfg = load_config(path, ["training.epochs=5"])
    assert cfg.training.epochs == 5 and cfg.features.name == "cqt" and cfg.training.batch_size == 32
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lr=1", "training.lr: unknown key"),
        ("bogus.x=1", "bogus: unknown key"),
        ("training.epochs=abc", "training.epochs: expected an integer"),
        ("training.epochs=2.5", "training.epochs: expected an integer"),
        ("training.amp=yes please", "training.amp: expected true/false"),
        ("splits.train=2", "splits.train: 2.0 is outside the allowed range"),
        ("features.name=mfcc", "features.name: 'mfcc' is not one of"),
        ("training.optimizer=lion", "training.optimizer: 'lion' is not one of"),
        ("augmentation.gain.p=1.5", "augmentation.gain.p: 1.5 is outside"),
        ("features.f_max=20000", "features.f_max: 20000.0 is above Nyquist"),
        ("splits.val=0.3", "splits: train+val+test must sum to 1"),
        ("training", "expected key=value"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("(", r"\(")):
        load_config(None, [override])


def test_file_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: -4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: training.batch_size: -4 is outside"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.learning_rate=nan", "training.learning_rate"),
        ("data.max_duration=.nan", "data.max_duration"),
        ("training.momentum=nan", "training.momentum"),
        ("training.weight_decay=inf", "training.weight_decay"),
        ("augmentation.gain.min_db=-.inf", "augmentation.gain.min_db"),
        ("model.params.dropout=nan", "model.params.dropout"),
        ("model.params.widths=[16, .inf]", r"model.params.widths\[1\]"),
    ],
)
def test_non_finite_numbers_are_rejected_by_key(override, key):
    """NaN passes every range check (each comparison is false), so it is refused as such (issue 10.8)."""
    with pytest.raises(ConfigError, match=rf"^{key}: (nan|inf|-inf) is not a finite number"):
        load_config(None, [override])


def test_non_finite_numbers_in_a_file_name_the_file_and_key(tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text("data:\n  min_duration: .nan\n")
    with pytest.raises(ConfigError, match=r"nan.yaml: data.min_duration: nan is not a finite number"):
        load_config(path)
