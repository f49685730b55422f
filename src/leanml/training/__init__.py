"""The train stage: batching, the training loop, metrics, checkpoints and plots."""

from __future__ import annotations

from leanml.metrics import HIGHER_IS_BETTER, MAIN_METRIC, evaluate, task_metrics
from leanml.models.predict import predict, to_predictions
from leanml.training.loop import TrainingError, TrainResult, make_loss, train_model

__all__ = [
    "HIGHER_IS_BETTER",
    "MAIN_METRIC",
    "TrainResult",
    "TrainingError",
    "evaluate",
    "make_loss",
    "predict",
    "task_metrics",
    "to_predictions",
    "train_model",
]
