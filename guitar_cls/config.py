"""Typed configuration: a dataclass tree loaded from YAML with dotted overrides.

Every field is typed; unknown keys, wrong types and values out of range raise ``ConfigError`` naming the dotted
key (``training.learning_rate``). The package default lives in ``guitar_cls/default.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the key."""


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict[str, Any]:
    return {"range": (lo, hi), **kw}


def _choices(*names: str) -> dict[str, Any]:
    return {"choices": names}


@dataclass
class DataConfig:
    # CSV/Parquet table, or a list of them trained on together ("demo" in a list: the demo set); None -> the demo
    # data set (generated on first use)
    metadata: str | list[str] | None = None
    # folder the table's source_audio paths are relative to (None -> the table's folder); with several tables one
    # folder for all of them but "demo", or a list with one entry (or None) per table
    audio_root: str | list[str | None] | None = None
    demo_dir: str = "data/demo"
    demo_recordings: int = field(default=120, metadata=_range(3, 100000))
    demo_seed: int = 0
    cache_dir: str = "outputs/cache"
    sample_rate: int = field(default=22050, metadata=_range(8000, 96000))
    normalize: str = field(default="peak", metadata=_choices("peak", "rms", "none"))
    min_duration: float = field(default=0.5, metadata=_range(0.05, 10.0))
    max_duration: float = field(default=3.0, metadata=_range(0.1, 30.0))
    long_notes: str = field(default="truncate", metadata=_choices("truncate", "split"))
    onset_offset_sec: float = field(default=0.0, metadata=_range(-1.0, 1.0))  # added to every onset
    strict: bool = False  # bad audio raises instead of going to the quarantine table

    def __post_init__(self) -> None:
        if isinstance(self.metadata, list) and not self.metadata:
            raise ConfigError("data.metadata: an empty list names no table (null means the demo data set)")
        if isinstance(self.audio_root, list):
            n_tables = len(self.metadata) if isinstance(self.metadata, list) else 1
            if len(self.audio_root) != n_tables:
                raise ConfigError(
                    f"data.audio_root: a list needs one entry per table ({n_tables}), got {len(self.audio_root)}"
                )


@dataclass
class FeatureConfig:
    name: str = field(default="logmel", metadata=_choices("logmel", "cqt", "chroma", "hpss"))
    n_fft: int = field(default=2048, metadata=_range(64, 16384))
    hop_length: int = field(default=128, metadata=_range(16, 4096))
    n_mels: int = field(default=128, metadata=_range(8, 512))
    f_min: float = field(default=80.0, metadata=_range(0.0, 20000.0))
    f_max: float = field(default=8000.0, metadata=_range(100.0, 48000.0))
    cqt_bins: int = field(default=84, metadata=_range(12, 168))
    bins_per_octave: int = field(default=12, metadata=_range(12, 48))
    n_chroma: int = field(default=12, metadata=_range(12, 48))
    hpss_kernel: int = field(default=17, metadata=_range(3, 63))
    top_db: float = field(default=50.0, metadata=_range(10.0, 200.0))


@dataclass
class ModelConfig:
    name: str = "resnet"
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the registered builder
    pretrained: str | None = None  # local path of a state dict (torchvision families only)


@dataclass
class TrainingConfig:
    epochs: int = field(default=30, metadata=_range(1, 10000))
    batch_size: int = field(default=32, metadata=_range(1, 4096))
    learning_rate: float = field(default=1e-3, metadata=_range(1e-7, 10.0))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0, 1.0))
    optimizer: str = field(default="adamw", metadata=_choices("adam", "adamw", "sgd"))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    scheduler: str = field(default="cosine", metadata=_choices("none", "plateau", "cosine", "onecycle"))
    loss: str = field(default="ce", metadata=_choices("ce", "focal"))
    focal_gamma: float = field(default=2.0, metadata=_range(0.0, 10.0))
    class_weights: str = field(default="balanced", metadata=_choices("balanced", "none"))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 0.5))
    early_stopping_patience: int = field(default=10, metadata=_range(1, 1000))
    num_workers: int = field(default=1, metadata=_range(1, 1024))
    use_gpu: bool | None = None  # None -> use a GPU when the cluster has one
    # Mixed precision: None -> where it helps (a GPU; a CPU with native bf16, AVX-512 BF16 or AMX), true forces it
    # (bf16 on CPU), false keeps fp32. The feature front end always runs in fp32.
    amp: bool | None = None
    channels_last: bool = True  # GPU only (on CPU a small fp32 model's training aborted in PyTorch's kernels)
    max_failures: int = field(default=1, metadata=_range(0, 100))
    seed: int = 42
    # Length-bucketed batches: ~3x faster on CPU (little padding), but since duration differs by class the batches
    # are nearly class-pure and batch-norm models then validate noisily (val BA jumping 0.6 <-> 0.9 between epochs).
    bucket_batches: bool = False
    # Batch norm statistics over valid frames only (models/norm.py): a random batch is mostly padding, which otherwise
    # shrinks the batch variance and makes a note's normalisation depend on its batch. Synth-only validation 0.81-0.82
    # vs 0.79 on demo v3/v4, but it costs ~38 % of a resnet-16 CPU step (bf16, 2 threads: 133 -> 184 ms) and the
    # brief's ResNet trains 2.5x instead of 3.0x the brief's loop (`benchmark.py train`): off by default.
    masked_batchnorm: bool = False
    # An exponential moving average of the weights and batch-norm statistics, updated after every optimizer step
    # (decay warmed up as min(ema_decay, (1 + n) / (10 + n)) over the first steps): validation, early stopping, the
    # checkpoints and the registered model use the averaged network; the optimizer keeps training the raw one. null =
    # off. 0.99-0.999 for a few hundred steps per epoch or fewer (the average spans ~1 / (1 - decay) steps).
    ema_decay: float | None = field(default=None, metadata=_range(0.0, 0.99999))


@dataclass
class GainConfig:
    enabled: bool = True
    p: float = field(default=0.5, metadata=_range(0.0, 1.0))
    min_db: float = field(default=-6.0, metadata=_range(-60.0, 60.0))
    max_db: float = field(default=6.0, metadata=_range(-60.0, 60.0))


@dataclass
class NoiseConfig:
    enabled: bool = True
    p: float = field(default=0.3, metadata=_range(0.0, 1.0))
    min_snr_db: float = field(default=15.0, metadata=_range(-20.0, 100.0))
    max_snr_db: float = field(default=40.0, metadata=_range(-20.0, 100.0))


@dataclass
class CutShortConfig:
    enabled: bool = True
    p: float = field(default=0.2, metadata=_range(0.0, 1.0))
    min_sec: float = field(default=0.08, metadata=_range(0.01, 10.0))  # new length uniform in [min_sec, max_sec]
    max_sec: float = field(default=0.35, metadata=_range(0.01, 10.0))


@dataclass
class TimeStretchConfig:
    enabled: bool = True
    p: float = field(default=0.3, metadata=_range(0.0, 1.0))
    min_rate: float = field(default=0.9, metadata=_range(0.25, 4.0))
    max_rate: float = field(default=1.1, metadata=_range(0.25, 4.0))


@dataclass
class PitchShiftConfig:
    enabled: bool = True
    p: float = field(default=0.2, metadata=_range(0.0, 1.0))
    max_semitones: float = field(default=0.75, metadata=_range(0.0, 3.0))  # uniform in +-max, lengths kept


@dataclass
class SaturationConfig:
    enabled: bool = True
    p: float = field(default=0.2, metadata=_range(0.0, 1.0))
    min_drive_db: float = field(default=0.0, metadata=_range(-20.0, 40.0))  # tanh drive relative to the peak
    max_drive_db: float = field(default=18.0, metadata=_range(-20.0, 40.0))


@dataclass
class EqConfig:
    enabled: bool = True
    p: float = field(default=0.3, metadata=_range(0.0, 1.0))
    max_db: float = field(default=6.0, metadata=_range(0.0, 24.0))  # control-point gains uniform in +-max_db
    n_points: int = field(default=6, metadata=_range(2, 32))  # log-spaced 50 Hz .. 16 kHz; more = wigglier curve


@dataclass
class ReverbConfig:
    enabled: bool = True
    p: float = field(default=0.3, metadata=_range(0.0, 1.0))
    min_rt60: float = field(default=0.2, metadata=_range(0.05, 5.0))  # seconds to decay by 60 dB
    max_rt60: float = field(default=0.8, metadata=_range(0.05, 5.0))
    min_wet: float = field(default=0.1, metadata=_range(0.0, 1.0))  # share of the reverberant signal
    max_wet: float = field(default=0.5, metadata=_range(0.0, 1.0))


@dataclass
class OverlayConfig:
    enabled: bool = True
    p: float = field(default=0.2, metadata=_range(0.0, 1.0))
    min_db: float = field(default=-20.0, metadata=_range(-80.0, 0.0))  # the batch's previous note, RMS vs. this one
    max_db: float = field(default=-6.0, metadata=_range(-80.0, 0.0))


@dataclass
class BandLimitConfig:
    enabled: bool = True
    p: float = field(default=0.3, metadata=_range(0.0, 1.0))
    min_lowpass_hz: float = field(default=2000.0, metadata=_range(100.0, 48000.0))  # corners log-uniform
    max_lowpass_hz: float = field(default=8000.0, metadata=_range(100.0, 48000.0))
    min_highpass_hz: float = field(default=60.0, metadata=_range(1.0, 5000.0))
    max_highpass_hz: float = field(default=300.0, metadata=_range(1.0, 5000.0))


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    p: float = field(default=0.5, metadata=_range(0.0, 1.0))
    freq_mask: int = field(default=12, metadata=_range(0, 512))
    time_mask: int = field(default=20, metadata=_range(0, 4096))
    n_masks: int = field(default=2, metadata=_range(0, 10))


@dataclass
class MixupConfig:
    enabled: bool = False
    p: float = field(default=0.5, metadata=_range(0.0, 1.0))
    alpha: float = field(default=0.4, metadata=_range(0.01, 10.0))


@dataclass
class AugmentationConfig:
    enabled: bool = True  # master switch
    gain: GainConfig = field(default_factory=GainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    cut_short: CutShortConfig = field(default_factory=CutShortConfig)
    time_stretch: TimeStretchConfig = field(default_factory=TimeStretchConfig)
    pitch_shift: PitchShiftConfig = field(default_factory=PitchShiftConfig)
    saturation: SaturationConfig = field(default_factory=SaturationConfig)
    eq: EqConfig = field(default_factory=EqConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    band_limit: BandLimitConfig = field(default_factory=BandLimitConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)


@dataclass
class SplitConfig:
    train: float = field(default=0.70, metadata=_range(0.05, 0.95))
    val: float = field(default=0.15, metadata=_range(0.01, 0.9))
    test: float = field(default=0.15, metadata=_range(0.01, 0.9))
    seed: int = 42
    group_by: str = "source_audio"


@dataclass
class LoggingConfig:
    level: str = field(default="INFO", metadata=_choices("DEBUG", "INFO", "WARNING", "ERROR"))
    output_dir: str = "outputs"
    mlflow_uri: str | None = None  # None -> $MLFLOW_TRACKING_URI or sqlite:///<abs output_dir>/mlflow.db
    experiment: str = "guitar-note-classifier"
    registered_model: str = "guitar-note-classifier"
    storage_path: str | None = None  # Ray results; None -> $GUITAR_CLS_STORAGE or <abs output_dir>/ray_results


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as plain nested dicts (YAML/JSON friendly)."""
        return dataclasses.asdict(self)


def _check_value(key: str, tp: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    """Returns ``value`` converted to ``tp`` (int -> float only); raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        lists = [a for a in inner if typing.get_origin(a) is list]
        tp = lists[0] if isinstance(value, list) and lists else inner[0]
        origin = typing.get_origin(tp)
    if value is None:
        raise ConfigError(f"{key}: must not be null")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_value(f"{key}[{i}]", item, v, meta) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _reject_non_finite(key, value)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # NaN passes every range check (all comparisons are false)
            raise ConfigError(f"{key}: {value!r} is not a finite number")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    lo, hi = meta.get("range", (None, None))
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} is outside the allowed range [{lo}, {hi}]")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
    return value


def _reject_non_finite(key: str, value: Any) -> None:
    """Raises ConfigError naming the dotted key of the first NaN/inf float inside a mapping or list
    (``model.params.dropout``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _reject_non_finite(f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]", v)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key)
        else:
            kwargs[name] = _check_value(key, tp, value, fields[name].metadata)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "params":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Returns (dotted_key, value) from ``key=value``; the value is parsed as YAML (``3e-4`` -> float)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    return key.strip(), value


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Sets ``tree[a][b][c] = value`` for ``key='a.b.c'``, creating mappings below ``model.params``."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a section, cannot set {key}")
        node = nxt
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any] | None, overrides: typing.Iterable[str | tuple[str, Any]] = ()) -> Config:
    """Returns a validated Config from the package defaults updated by ``data`` and then ``overrides``."""
    with open(DEFAULT_CONFIG) as f:
        tree = yaml.safe_load(f) or {}
    tree = _merge(tree, data or {})
    for ov in overrides:
        key, value = parse_override(ov) if isinstance(ov, str) else ov
        set_dotted(tree, key, value)
    cfg = _build(Config, tree, "")
    check_consistency(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str | tuple[str, Any]] = ()) -> Config:
    """Returns the Config from a YAML file (or the package default when ``path`` is None) plus overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def check_consistency(cfg: Config) -> None:
    """Raises ConfigError for settings that are valid one by one but not together."""
    s = cfg.splits
    if abs(s.train + s.val + s.test - 1.0) > 1e-6:
        raise ConfigError(f"splits: train+val+test must sum to 1, got {s.train + s.val + s.test:.3f}")
    if cfg.data.min_duration > cfg.data.max_duration:
        raise ConfigError("data.min_duration: must not exceed data.max_duration")
    if cfg.features.f_min >= cfg.features.f_max:
        raise ConfigError("features.f_min: must be below features.f_max")
    if cfg.features.f_max > cfg.data.sample_rate / 2:
        raise ConfigError(f"features.f_max: {cfg.features.f_max} is above Nyquist ({cfg.data.sample_rate / 2})")
    a = cfg.augmentation
    for key, lo, hi in (
        ("gain", a.gain.min_db, a.gain.max_db),
        ("noise", a.noise.min_snr_db, a.noise.max_snr_db),
        ("cut_short", a.cut_short.min_sec, a.cut_short.max_sec),
        ("time_stretch", a.time_stretch.min_rate, a.time_stretch.max_rate),
        ("saturation", a.saturation.min_drive_db, a.saturation.max_drive_db),
        ("reverb.min_rt60", a.reverb.min_rt60, a.reverb.max_rt60),
        ("reverb.min_wet", a.reverb.min_wet, a.reverb.max_wet),
        ("overlay", a.overlay.min_db, a.overlay.max_db),
        ("band_limit.min_lowpass_hz", a.band_limit.min_lowpass_hz, a.band_limit.max_lowpass_hz),
        ("band_limit.min_highpass_hz", a.band_limit.min_highpass_hz, a.band_limit.max_highpass_hz),
    ):
        if lo > hi:
            raise ConfigError(f"augmentation.{key}: the minimum {lo} exceeds the maximum {hi}")
