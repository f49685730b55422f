"""A training process killed with SIGKILL in the middle of an epoch resumes to the uninterrupted result."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from leanml.training import train_model

if TYPE_CHECKING:
    from .conftest import Prepared

# Runs in a child process: trains, and SIGKILLs itself at the 22nd training batch (mid-epoch 3 of 4 on
# this data: 285 rows in batches of 32 make 9 batches an epoch), with no chance to clean up.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from leanml.config import Config
    from leanml.training import loop, train_model

    torch.set_num_threads(1)
    config = Config.model_validate_json(sys.argv[1])
    make_loss = loop.make_loss
    calls = {"train": 0}

    def killing_make_loss(task, target_std=1.0):
        loss_fn = make_loss(task, target_std)
        def wrapped(output, target):
            if torch.is_grad_enabled():
                calls["train"] += 1
                if calls["train"] == 22:
                    os.kill(os.getpid(), signal.SIGKILL)
            return loss_fn(output, target)
        return wrapped

    loop.make_loss = killing_make_loss
    train_model(config, sys.argv[2], sys.argv[3], plots=False)
    """
)


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
    breast_cancer: Prepared, tmp_path: Path
) -> None:
    config = breast_cancer.config(
        model={"arch": "mlp", "hidden": [16], "dropout": 0.1},
        train={"optimizer": "adam", "lr": 0.01, "epochs": 4, "batch_size": 32, "schedule": "cosine"},
    )
    killed = tmp_path / "killed"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, config.model_dump_json(), str(breast_cancer.dir), str(killed)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr  # it really died by SIGKILL
    assert (killed / "checkpoints").is_dir()
    resumed = train_model(config, breast_cancer.dir, killed, resume=True, plots=False)
    full = train_model(config, breast_cancer.dir, tmp_path / "full", plots=False)
    assert resumed.validation == full.validation and resumed.test == full.test
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
