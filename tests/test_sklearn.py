"""The scikit-learn estimators against scikit-learn's own models, tools and estimator checks.

Every fit runs the real stages (prepare → train → bundle, ~1.5 s each, most of it the ONNX export), so
the models are tiny and the fits few. scikit-learn's estimator checks fit about a hundred times in all;
every check runs; ``LEANML_SKLEARN_CHECKS=fast`` runs only a cheap subset that covers the contract.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn import datasets
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_estimator_cloneable,
    parametrize_with_checks,
)

from leanml.bundle import load_bundle
from leanml.sklearn import LeanClassifier, LeanRegressor

SMALL = {"hidden": (16,), "epochs": 40, "lr": 1e-2, "random_state": 0}
"""A model small and short enough for tests, still well fitted on these tables."""


def test_parameters_map_to_the_config_and_clone() -> None:
    model = LeanClassifier(
        hidden=(32, 16), lr=0.05, train={"optimizer": "sgd"}, columns={"a": {"type": "ignore"}}
    )
    params = model.get_params()
    assert params["hidden"] == (32, 16) and params["train"] == {"optimizer": "sgd"}
    twin = clone(model.set_params(epochs=7))
    assert twin.get_params() == model.get_params() and twin is not model
    assert twin.train is not model.train or twin.train == model.train


def test_a_key_set_twice_or_an_unknown_column_is_refused_before_training() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=r"train: 'lr' is set by the estimator's own parameter"):
        LeanClassifier(train={"lr": 0.1}).fit(X, y)
    with pytest.raises(ValueError, match=r"columns: 'petal' not in X; X has x0, x1, x2, x3"):
        LeanClassifier(columns={"petal": {"type": "ignore"}}).fit(X, y)
    with pytest.raises(ValueError, match=r"model.arch: 'tree' is not one of linear, mlp, resmlp"):
        LeanClassifier(arch="tree").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LeanClassifier().fit(X, np.zeros(len(X)))


def test_cross_val_score_on_iris_is_within_reach_of_logistic_regression() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    lean = cross_val_score(LeanClassifier(**SMALL), X, y, cv=3)
    reference = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression()), X, y, cv=3)
    assert lean.shape == (3,)
    assert lean.mean() >= reference.mean() - 0.05, (lean, reference)


def test_binary_frame_predicts_like_logistic_regression_and_pickles_to_the_same_bundle(
    tmp_path: Path,
) -> None:
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = LeanClassifier(**SMALL).fit(X_train, y_train)
    reference = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train)

    assert list(model.feature_names_in_) == list(X.columns) and model.n_features_in_ == X.shape[1]
    assert list(model.classes_) == [0, 1]
    assert model.score(X_test, y_test) >= reference.score(X_test, y_test) - 0.03
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[proba.argmax(axis=1)])

    # The pickle holds the bundle's bytes; it reloads through the verified loader to the same answers.
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X_test), proba)
    # The saved bundle is a plain leanml bundle: batch prediction and serving score the same.
    bundle = load_bundle(model.save_bundle(tmp_path / "bundle"))
    served = bundle.predict(pl.from_pandas(X_test))
    np.testing.assert_allclose(served.select("proba_0", "proba_1").to_numpy(), proba, atol=1e-6)


def test_a_linear_regressor_matches_least_squares() -> None:
    X, y = datasets.load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = LeanRegressor(arch="linear", epochs=40, lr=1e-2, random_state=0).fit(X_train, y_train)
    reference = LinearRegression().fit(X_train, y_train)
    assert model.score(X_test, y_test) == pytest.approx(r2_score(y_test, model.predict(X_test)))
    assert model.score(X_test, y_test) == pytest.approx(reference.score(X_test, y_test), abs=0.03)


def test_grid_search_picks_the_learning_rate_that_learns() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    search = GridSearchCV(LeanClassifier(**SMALL), {"lr": [1e-6, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_ == {"lr": 1e-2}
    assert search.best_estimator_.score(X, y) > 0.9


def test_a_pipeline_passes_a_polars_frame_with_text_columns_through(flights: pl.DataFrame) -> None:
    rows = flights.filter(pl.col("delayed").is_not_null()).head(3000)
    features = ["carrier", "origin", "dest", "dep_delay", "sched_dep_time", "distance", "tailnum"]
    X, y = rows.select(features), rows["delayed"]
    split = np.arange(rows.height) < 2000
    add_hour = FunctionTransformer(lambda frame: frame.with_columns(hour=pl.col("sched_dep_time") // 100))
    pipeline = Pipeline([("hour", add_hour), ("model", LeanClassifier(**SMALL))])
    with pytest.warns(UserWarning, match=r"'tailnum' are not used as features"):
        pipeline.fit(X.filter(split), y.filter(split))

    model = pipeline.named_steps["model"]
    assert (
        model.columns_["carrier"]["type"] == "categorical" and model.columns_["tailnum"]["type"] == "ignore"
    )
    assert list(model.feature_names_in_) == [*features, "hour"]
    assert model.classes_.dtype == bool
    predicted = pipeline.predict(X.filter(~split))
    assert predicted.dtype == bool

    numbers = ["dep_delay", "sched_dep_time", "distance"]
    reference = make_pipeline(
        ColumnTransformer(
            [
                ("text", OneHotEncoder(handle_unknown="ignore"), ["carrier", "origin", "dest"]),
                ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
            ]
        ),
        LogisticRegression(max_iter=1000),
    )
    reference.fit(X.filter(split).to_pandas(), y.filter(split).to_numpy())
    expected = reference.score(X.filter(~split).to_pandas(), y.filter(~split).to_numpy())
    assert accuracy_score(y.filter(~split).to_numpy(), predicted) >= expected - 0.03


def test_string_labels_and_unnamed_columns_come_back_as_given() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    model = LeanClassifier(**SMALL).fit(pd.DataFrame(X), names)
    assert not hasattr(model, "feature_names_in_")  # integer column names are not feature names
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(model.predict(X)) <= set(model.classes_)
    with pytest.raises(ValueError, match="X has 3 features, but LeanClassifier is expecting 4"):
        model.predict(X[:, :3])


# --- scikit-learn's estimator checks --------------------------------------------------------------------

FAST_CHECKS = {
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimators_unfitted",
    "check_fit2d_1sample",
    "check_fit1d",
    "check_estimators_empty_data_messages",
    "check_requires_y_none",
    "check_supervised_y_no_nan",
    "check_classifiers_one_label",
    "check_classifiers_regression_target",
    "check_estimators_pickle",
    "check_fit_check_is_fitted",
    "check_n_features_in_after_fitting",
    "check_mixin_order",
    "check_complex_data",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_estimator_sparse_tag",
    "check_classifiers_one_label_sample_weights",
    "check_dont_overwrite_parameters",
    "check_methods_subset_invariance",
}
"""Checks that fit at most once or twice; together they cover the contract (params, validation, fitted
state, pickling, feature names). The others retrain several times each (~100 s for both estimators)."""
ALL_CHECKS = os.environ.get("LEANML_SKLEARN_CHECKS", "all") != "fast"


def _check_name(check: Any) -> str:
    function = check.func if hasattr(check, "func") else check
    return str(function.__name__)


@parametrize_with_checks([LeanClassifier(**SMALL), LeanRegressor(**SMALL)])
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    if not ALL_CHECKS and _check_name(check) not in FAST_CHECKS:
        pytest.skip("retrains several times; skipped under LEANML_SKLEARN_CHECKS=fast")
    check(estimator)


@pytest.mark.parametrize("estimator", [LeanClassifier(**SMALL), LeanRegressor(**SMALL)], ids=type)
def test_feature_names_follow_scikit_learn(estimator: Any) -> None:
    # Not yielded by parametrize_with_checks in scikit-learn 1.9, so called here.
    check_estimator_cloneable(type(estimator).__name__, estimator)
    check_dataframe_column_names_consistency(type(estimator).__name__, estimator)
