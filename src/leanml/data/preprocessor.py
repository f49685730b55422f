"""Preprocessing: analyze (:mod:`leanml.data.fit`) and transform (:mod:`leanml.data.transform`).

The public face of the two modules, so that stages need one import.
"""

from __future__ import annotations

from leanml.data.fit import fit_preprocessor
from leanml.data.transform import (
    FLAGS,
    QUALITY_METRICS,
    REASON,
    AnyState,
    Frame,
    Mode,
    Stages,
    annotate,
    annotation_stages,
    apply_stages,
    check_columns,
    check_reserved,
    columns_frame,
    feature_column,
    feature_matrix,
    quality_exprs,
    records_frame,
    rejection_rules,
    to_matrix,
    transform,
    transform_records,
)

__all__ = [
    "FLAGS",
    "QUALITY_METRICS",
    "REASON",
    "AnyState",
    "Frame",
    "Mode",
    "Stages",
    "annotate",
    "annotation_stages",
    "apply_stages",
    "check_columns",
    "check_reserved",
    "columns_frame",
    "feature_column",
    "feature_matrix",
    "fit_preprocessor",
    "quality_exprs",
    "records_frame",
    "rejection_rules",
    "to_matrix",
    "transform",
    "transform_records",
]
