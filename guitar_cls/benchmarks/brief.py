"""The brief's per-item loader, the baseline of the ``featurize`` and ``train`` benchmarks.

Each ``__getitem__`` reads one snippet with librosa (offset and duration, resampled to 22,050 Hz), peak-normalises,
pads or cuts it to the 3-s window and computes the librosa log-mel (n_fft 2048, hop 128, 128 mels, 80-8000 Hz,
``power_to_db(ref=max)``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class BriefSnippets(Dataset):
    """The brief's per-item dataset of ``(path, onset_sec, duration_sec, label)`` rows: audio read and log-mel
    computed in every ``__getitem__``, which returns ``(features (1, 128, T), label)``."""

    def __init__(self, rows: list[tuple[str, float, float, int]], sr: int = 22050, max_s: float = 3.0) -> None:
        self.rows, self.sr, self.n = rows, sr, int(sr * max_s)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import librosa  # only the baselines need it

        path, onset, duration, label = self.rows[i]
        y, _ = librosa.load(path, sr=self.sr, offset=onset, duration=min(duration, self.n / self.sr))
        y = y / max(float(np.abs(y).max()), 1e-8)
        y = np.pad(y, (0, max(0, self.n - len(y))))[: self.n]
        mel = librosa.feature.melspectrogram(
            y=y, sr=self.sr, n_fft=2048, hop_length=128, n_mels=128, fmin=80, fmax=8000
        )
        return torch.from_numpy(librosa.power_to_db(mel, ref=np.max)).float()[None], label
