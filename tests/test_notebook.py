"""notebooks/exploratory_analysis.ipynb: committed without outputs, and it runs on a tiny demo set (nbclient) both
with a sweep record and a model and without them (those sections say they are skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "exploratory_analysis.ipynb"


def _execute(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": "."}})
    client.execute(cwd=str(NOTEBOOK.parent))  # raises CellExecutionError naming the cell on any error
    return nb


def _texts(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            for mime in ("text/plain", "text/markdown", "text/html"):
                out.append(str(o.get("data", {}).get(mime, "")))
    return "\n".join(out)


def _count(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert 'os.environ.get("GUITAR_CLS_DATA", "data/demo")' in code[0].source  # the data path is read first


@pytest.fixture()
def sweep_and_model(tmp_path: Path) -> tuple[Path, Path]:
    """Returns (a sweep folder with a two-trial record, an untrained tiny model's checkpoint)."""
    from guitar_cls.config import load_config
    from guitar_cls.predict import Classifier
    from guitar_cls.train.checkpoint import make_payload, save_checkpoint
    from guitar_cls.train.smoke import smoke_overrides
    from guitar_cls.tune.record import SweepRecord, TrialRecord

    cfg = load_config(None, smoke_overrides())
    clf = Classifier.from_config(cfg)
    payload = make_payload(clf.model, cfg, clf.frontend.in_channels, epoch=0, metrics={}, best_metric=0.0)
    checkpoint = save_checkpoint(payload, tmp_path / "model" / "best.pt")
    trials = [
        TrialRecord("trial_low", "TERMINATED", "completed", 3, 0.41, 0.40, 1.5, None, {"model.name": "resnet"}),
        TrialRecord("trial_high", "TERMINATED", "completed", 3, 0.77, 0.75, 2.5, str(checkpoint.parent), {}),
    ]
    SweepRecord("tiny_sweep", "val/balanced_accuracy", "max", 3, trials).write(tmp_path / "sweep")
    return tmp_path / "sweep", checkpoint


@pytest.mark.slow
def test_notebook_runs_with_a_sweep_and_a_model(tiny_demo: Path, sweep_and_model, monkeypatch):
    sweep, checkpoint = sweep_and_model
    env = {"GUITAR_CLS_DATA": str(tiny_demo), "GUITAR_CLS_SWEEP": str(sweep), "GUITAR_CLS_MODEL": str(checkpoint)}
    nb = _execute(env, monkeypatch)
    text = _texts(nb)
    assert "synth" in text and "samples" in text  # the class balance per subset
    assert "sweep tiny_sweep: 2 trials" in text and "best trial trial_high" in text
    assert text.index("trial_high") < text.index("trial_low")  # the leaderboard is best first
    assert "events classified" in text and "balanced accuracy" in text and "skipped" not in text
    assert _count(nb, "image/png") >= 4  # balance, durations, log-mels, confusion matrix
    assert "<audio" in text  # an untrained model makes errors: they come with players


@pytest.mark.slow
def test_notebook_skips_the_sweep_and_champion_when_there_are_none(tiny_demo: Path, tmp_path, monkeypatch):
    store = tmp_path / "no_store" / "mlflow.db"
    env = {
        "GUITAR_CLS_DATA": str(tiny_demo),
        "GUITAR_CLS_SWEEP": str(tmp_path / "no_sweep"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
    }
    monkeypatch.delenv("GUITAR_CLS_MODEL", raising=False)
    text = _texts(_execute(env, monkeypatch))
    assert "leaderboard skipped" in text and "confusion matrix skipped" in text
    assert not store.exists()  # looking for a champion created no store
    assert "<audio" not in text
