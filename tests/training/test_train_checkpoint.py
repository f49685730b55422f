"""Checkpoints: safetensors + JSON, atomic, no pickle; optimizers restore exactly; schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leanml.config import TrainConfig
from leanml.errors import StateError
from leanml.training import checkpoint
from leanml.training.optimizer import make_optimizer
from leanml.training.schedule import LearningRateSchedule

OPTIMIZERS = ["gd", "sgd", "momentum", "adam", "adamw"]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 4, generator=generator)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path: Path, name: str) -> None:
    config = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.01, nesterov=name == "momentum")
    model = _model()
    optimizer = make_optimizer(config, model)
    _steps(model, optimizer, 3, seed=1)
    tensors, meta = checkpoint.flatten_optimizer(optimizer)
    path = checkpoint.save_checkpoint(
        tmp_path / "last.safetensors",
        {**checkpoint.prefixed("model.", model.state_dict()), **checkpoint.prefixed("optimizer.", tensors)},
        {"optimizer": meta, "note": "hello"},
    )
    saved = checkpoint.load_checkpoint(path)
    assert saved is not None and saved.state["note"] == "hello"

    resumed = _model()
    resumed.load_state_dict(saved.group("model."))
    resumed_optimizer = make_optimizer(config, resumed)
    checkpoint.restore_optimizer(resumed_optimizer, saved.group("optimizer."), saved.state["optimizer"])
    _steps(model, optimizer, 3, seed=2)
    _steps(resumed, resumed_optimizer, 3, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_are_safetensors_without_pickle(tmp_path: Path) -> None:
    path = checkpoint.save_checkpoint(tmp_path / "c.safetensors", {"w": torch.ones(2)}, {"epochs_done": 1})
    raw = path.read_bytes()
    assert b"pickle" not in raw and not raw.startswith(b"\x80")  # a safetensors header, not a pickle
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left behind


def test_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    assert checkpoint.load_checkpoint(tmp_path / "none.safetensors") is None
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(StateError, match="cannot read checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "bad.safetensors")


def test_a_write_killed_halfway_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.safetensors"
    checkpoint.save_checkpoint(path, {"w": torch.ones(2)}, {"epochs_done": 1})

    def half_written(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(checkpoint, "save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(path, {"w": torch.zeros(2)}, {"epochs_done": 2})
    saved = checkpoint.load_checkpoint(path)
    assert saved is not None and saved.state["epochs_done"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_learning_rate_schedules() -> None:
    cosine = LearningRateSchedule(TrainConfig(lr=1.0, epochs=12, warmup_epochs=2, schedule="cosine"))
    assert [round(cosine.lr(e), 4) for e in range(3)] == [0.3333, 0.6667, 1.0]
    assert cosine.lr(7) == pytest.approx(0.5)
    assert 0 < cosine.lr(11) < 0.03

    step = LearningRateSchedule(TrainConfig(lr=1.0, epochs=30, schedule="step", step_size=10, gamma=0.5))
    assert [step.lr(e) for e in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]

    plateau = LearningRateSchedule(TrainConfig(lr=1.0, schedule="plateau", plateau_patience=2, gamma=0.1))
    for value in (0.5, 0.6, 0.6, 0.6):
        plateau.observe("roc_auc", value)
    assert plateau.lr(4) == pytest.approx(0.1)
    restored = LearningRateSchedule(plateau.config)
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr(4) == plateau.lr(4)

    assert LearningRateSchedule(TrainConfig(lr=0.3)).lr(17) == 0.3
