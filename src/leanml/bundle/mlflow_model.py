"""Export a bundle as an MLflow model with a ``pyfunc`` flavor (``leanml export mlflow``).

The model is saved the "models from code" way: its code is the short file :data:`MODEL_CODE` (copied
into the model folder as ``leanml_model.py``), which MLflow runs to get a :class:`BundleModel`; the bundle's
files are the model's artifact ``bundle``, which :meth:`BundleModel.load_context` loads through leanml's
verified loader (checksums, reference replay through the serving graph). Nothing is pickled: MLflow
cloudpickles a ``PythonModel`` *object* given to ``save_model``, not one a code file sets.

``mlflow.pyfunc.load_model(DIR).predict(frame)`` answers what ``leanml predict`` writes for the same rows:
``prediction``, ``proba_LABEL`` per class, ``__reason`` and ``__flags``. The signature names the input
columns with type ``any``: leanml reads and checks the values itself, as it does everywhere else (MLflow's
typed columns would refuse integers in a numeric column or time zones in a datetime one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import AnyType, ColSpec, Schema

from leanml._version import __version__
from leanml.bundle.artifact import Bundle, load_bundle

ARTIFACT = "bundle"
CODE_FILE = "leanml_model.py"
MODEL_CODE = '''"""A leanml bundle as an MLflow pyfunc model (models from code).

The bundle is the artifact 'bundle', loaded and verified by leanml (checksums, reference replay); no pickle
is involved."""

import mlflow

from leanml.bundle.mlflow_model import BundleModel

mlflow.models.set_model(BundleModel())
'''


class BundleModel(PythonModel):
    """The pyfunc model: predicts through the bundle that :meth:`load_context` loads."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load and verify the bundle artifact."""
        self.bundle = load_bundle(context.artifacts[ARTIFACT])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The bundle's predictions for the rows of ``model_input`` (as ``Bundle.predict`` gives them)."""
        if self.bundle is None:
            raise RuntimeError("the model has no bundle: load it with mlflow.pyfunc.load_model")
        return self.bundle.predict(model_input).to_pandas()


def signature(bundle: Bundle) -> ModelSignature:
    """The model's input signature: the bundle's input columns, each required, of any type."""
    return ModelSignature(inputs=Schema([ColSpec(AnyType(), column.name) for column in bundle.state.columns]))


def export_mlflow(reference: str | Path, out: str | Path) -> Path:
    """Write the bundle at ``reference`` (verified first) as an MLflow pyfunc model in ``out``.

    ``out`` is replaced when it exists; the model is written beside it and renamed into place, so a reader
    never sees half of it.
    """
    bundle = load_bundle(reference)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        code = staging / CODE_FILE
        code.write_text(MODEL_CODE)
        model = staging / "model"
        with _quiet_mlflow():
            mlflow.pyfunc.save_model(
                str(model),
                python_model=str(code),
                artifacts={ARTIFACT: str(bundle.path)},
                signature=signature(bundle),
                pip_requirements=[f"leanml[mlflow]=={__version__}"],
            )
        if target.exists():
            shutil.rmtree(target)
        model.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """No progress bar while MLflow copies the bundle, and no advice about input examples."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            yield
    finally:
        if previous is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous
