"""Predicting with a model: network outputs → probabilities or values, over a matrix in batches."""

from __future__ import annotations

import numpy as np
import torch

from leanml.models.registry import TabularModel

PREDICT_BATCH_ROWS = 8192


def to_predictions(task: str, output: torch.Tensor) -> torch.Tensor:
    """Probabilities or values from raw network outputs ``[batch, n_outputs]``.

    ``binary``: ``[batch]`` probability of class index 1; ``multiclass``: ``[batch, K]`` class
    probabilities; ``regression``: ``[batch]`` values in the target's units.
    """
    if task == "binary":
        return torch.sigmoid(output[:, 0])
    if task == "multiclass":
        return torch.softmax(output, dim=1)
    if task == "regression":
        return output[:, 0]
    raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")


def predict(
    model: TabularModel, features: np.ndarray | torch.Tensor, batch_size: int = PREDICT_BATCH_ROWS
) -> np.ndarray:
    """Predictions (see :func:`to_predictions`) for a float32 ``[rows, n_inputs]`` matrix, in batches.

    Runs in eval mode on the model's device; the model's training/eval mode is left as it was.
    """
    matrix = torch.as_tensor(features, dtype=torch.float32)
    if matrix.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix [rows, n_inputs], got shape {tuple(matrix.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [
                to_predictions(model.task, model(matrix[start : start + batch_size].to(device))).cpu()
                for start in range(0, max(len(matrix), 1), batch_size)  # an empty matrix: one empty batch
            ]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy()
