"""Per-class metrics computed on read from stored predictions (the study's Table 1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from engine.store import Store

CLASS_NAMES = ("negative", "positive")


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ModelMetrics:
    name: str
    model_id: str
    role: str
    n: int                                # reviews with a stored prediction
    accuracy: float
    classes: tuple[ClassScores, ...]      # negative, positive
    confusion: tuple[tuple[int, int], tuple[int, int]]   # rows true neg/pos, cols predicted neg/pos
    truncated: int                        # predictions of truncated reviews

    def to_dict(self) -> dict:
        return asdict(self)


def class_metrics(labels: Sequence[int], preds: Sequence[int]) -> tuple[float, tuple[ClassScores, ...], tuple]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (scikit-learn)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if not len(labels):  # a model whose predictions are not stored yet (a run in progress)
        return 0.0, tuple(ClassScores(c, 0.0, 0.0, 0.0, 0) for c in CLASS_NAMES), ((0, 0), (0, 0))
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=[0, 1], zero_division=0)
    classes = tuple(ClassScores(CLASS_NAMES[i], float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i in (0, 1))
    cm = confusion_matrix(labels, preds, labels=[0, 1])
    confusion = tuple(tuple(int(x) for x in row) for row in cm)
    return float(accuracy_score(labels, preds)) if len(labels) else 0.0, classes, confusion


def experiment_metrics(store: Store, experiment: str) -> list[ModelMetrics]:
    """Metrics of every model of an experiment over its metrics sample."""
    ids = store.sample_ids(experiment, "metrics")
    labels = {r["id"]: r["label"] for r in store.db.query(
        "SELECT r.id, r.label FROM reviews r JOIN samples s ON s.review_id = r.id"
        " WHERE s.experiment = ? AND s.role = 'metrics'", [experiment])}
    out = []
    for m in store.experiment_models(experiment):
        preds = store.predictions(m["id"], ids)
        y = [labels[p["review_id"]] for p in preds]
        yhat = [p["pred"] for p in preds]
        acc, classes, cm = class_metrics(y, yhat)
        out.append(ModelMetrics(m["name"], m["id"], m["role"], len(preds), acc, classes, cm,
                                sum(p["truncated"] for p in preds)))
    return out
