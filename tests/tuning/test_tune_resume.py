"""A study killed mid-way resumes from its journal: no finished trial runs again, the rest do."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from rich.console import Console

from leanml.bundle import BundleError
from leanml.config import load_config
from leanml.tuning import SearchSpace, run_tune
from leanml.tuning.study import STUDY_NAME, TuneError, open_storage


def _trials(storage: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY_NAME, storage=open_storage(storage)).get_trials()


def test_resume_after_kill_repeats_no_finished_trial(
    tune_raw: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    # Six grid points of about a second each: long enough to kill the study between trials 2 and 6.
    raw = tune_raw(
        {"train.lr": [0.002, 0.005, 0.01], "model.hidden": [[4], [8]]},
        tune={"sampler": "grid"},
        train={"epochs": 15, "batch_size": 16},
    )
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(raw))
    folder = Path(raw["workdir"]) / "bc" / "tune"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "leanml", "tune", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("trials/*/metrics.json"))) < 2:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the study did not finish two trials in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = {t.number: t for t in _trials(folder / "study.log")}
    finished_before = {n: t for n, t in before.items() if t.state.is_finished()}
    assert 1 <= len(finished_before) < 6  # trial 0 was told before trial 1 started

    output = io.StringIO()
    run_tune(load_config(path), resume=True, console=Console(file=output, width=200), bundle=False)
    assert "resuming the study" in output.getvalue()

    after = {t.number: t for t in _trials(folder / "study.log")}
    for number, trial in finished_before.items():  # kept as they were
        assert after[number].state == trial.state and after[number].params == trial.params
    interrupted = [t for t in after.values() if t.user_attrs.get("interrupted")]
    for trial in interrupted:  # left running by the kill: failed, with the reason, and run again
        assert trial.number in before and not before[trial.number].state.is_finished()
        assert trial.state == optuna.trial.TrialState.FAIL
        assert "interrupted" in trial.user_attrs["reason"]
    # Every grid point exactly once among the trials that ran to the end.
    config = load_config(path)
    space = SearchSpace(config.tune.space)
    ran = [t for t in after.values() if not t.user_attrs.get("interrupted")]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    assert Counter(tuple(sorted(t.params.items())) for t in ran) == Counter(
        tuple(sorted(p.items())) for p in space.grid_points()
    )
    assert len(after) == 6 + len(interrupted)

    again = run_tune(load_config(path), resume=True, bundle=False)  # nothing left to run
    assert again.ran == 0 and len(_trials(folder / "study.log")) == len(after)


def test_a_bundling_failure_keeps_the_study_and_resume_bundles_it(
    tune_raw: Callable[..., dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(tune_raw({"train.lr": [0.005, 0.01]}, tune={"sampler": "grid"})))
    folder = tmp_path / "runs" / "bc" / "tune"

    def broken(config: Any, console: Any = None) -> Any:
        raise BundleError("the exported ONNX graph disagrees with the PyTorch model")

    monkeypatch.setattr("leanml.tuning.stage.train_and_bundle", broken)
    with pytest.raises(TuneError, match=r"disagrees.*study is kept.*tune --resume"):
        run_tune(load_config(path))
    finished = [t for t in _trials(folder / "study.log") if t.state.is_finished()]
    assert len(finished) == 2 and (folder / "best.yaml").exists()
    assert not (tmp_path / "models" / "bc").exists()

    monkeypatch.undo()
    resumed = run_tune(load_config(path), resume=True)
    assert resumed.ran == 0 and len(_trials(folder / "study.log")) == 2
    assert resumed.bundle is not None and resumed.bundle.path.is_dir()
    assert resumed.bundle.name == "bc"
