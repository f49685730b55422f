"""Synthetic rows around the training rows, for the teacher to label and the student to learn from.

A small student learns the teacher's function only where it sees it: on the training rows alone it
copies the teacher at a few thousand points and guesses between them. Model compression (Bucilă, Caruana
and Niculescu-Mizil, *Model Compression*, KDD 2006) labels many more rows with the teacher; when there are
no more real ones it makes them with **MUNGE**: for each row ``e`` and its nearest neighbour ``e'``, each
attribute is, with probability ``p``, replaced by the neighbour's value — a continuous one drawn from
``N(e'_a, sd)`` with ``sd = |e_a − e'_a| / s`` — so the new rows stay on the data's manifold, with local
variation where the data varies. ``mixup`` (Zhang et al., ICLR 2018, in input space) is the simpler
alternative: a convex combination ``λ·e + (1 − λ)·e''`` with a random partner and ``λ ~ Beta(α, α)``.

Both work in the prepared feature space (the model's inputs) with the features grouped by the input
column they come from (:class:`FeatureGroups`): a column's features move together, so a one-hot group
stays one-hot, and a value the column's ``__missing`` flag marks as imputed stays exactly the fill
value. Only numeric columns' values and datetime parts are perturbed or mixed; one-hot and flag features
are taken whole from one of the two rows.

Nearest neighbours are searched in a seeded sample of at most ``pool`` rows, by blocks of ``chunk`` ×
``chunk`` distances (:func:`nearest_neighbours`): memory stays bounded whatever the table's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leanml.data.state import DatetimeState, NumericState, PreprocessState, feature_names

SYNTHETIC_KINDS = ("munge", "mixup", "none")
NEIGHBOUR_CHUNK = 4096
"""Rows per side of one block of distances (a block is ``4096²`` floats, 64 MiB)."""
NEIGHBOUR_POOL = 16384
"""Training rows sampled as candidate neighbours (all of them in smaller tables)."""
GENERATE_CHUNK = 65536
"""Synthetic rows made at a time (each step's temporaries are a few copies of this many rows)."""


@dataclass(frozen=True)
class FeatureGroups:
    """The model's input features grouped by input column (see the module docstring).

    ``column[j]`` is the group of feature ``j``; ``continuous[j]`` says whether it is a numeric value or a
    datetime part (perturbed, mixed) rather than a one-hot or ``__missing`` feature (taken whole; so are
    the values of a numeric column with other features derived from them, which must stay consistent);
    ``flag[j]`` is the index of the ``__missing`` feature of ``j``'s column, or ``-1``.
    """

    column: torch.Tensor
    continuous: torch.Tensor
    flag: torch.Tensor

    @property
    def count(self) -> int:
        """How many groups (input columns) there are."""
        return int(self.column.max()) + 1 if len(self.column) else 0


def feature_groups(state: PreprocessState) -> FeatureGroups:
    """The groups of ``state``'s features, in the order of :attr:`PreprocessState.feature_names`."""
    column: list[int] = []
    continuous: list[bool] = []
    flag: list[int] = []
    for number, state_column in enumerate(state.columns):
        names = feature_names(state_column)
        values = names[: len(names) - int(state_column.indicator)]
        first = len(column)
        column += [number] * len(names)
        # a numeric column's value moves alone, not when other features are derived from it
        alone = isinstance(state_column, NumericState) and values == [state_column.name]
        moves = alone or isinstance(state_column, DatetimeState)
        continuous += [moves] * len(values) + [False] * int(state_column.indicator)
        flag += [first + len(names) - 1 if state_column.indicator else -1] * len(names)
    return FeatureGroups(
        torch.tensor(column, dtype=torch.long),
        torch.tensor(continuous, dtype=torch.bool),
        torch.tensor(flag, dtype=torch.long),
    )


def nearest_neighbours(
    features: torch.Tensor,
    generator: torch.Generator,
    pool: int | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """For each row, the index of its nearest other row (Euclidean) among a seeded sample of ``pool``
    rows (default :data:`NEIGHBOUR_POOL`), computed by blocks of at most ``chunk × chunk`` distances
    (default :data:`NEIGHBOUR_CHUNK`)."""
    pool = NEIGHBOUR_POOL if pool is None else pool
    chunk = NEIGHBOUR_CHUNK if chunk is None else chunk
    rows = len(features)
    if rows < 2:
        raise ValueError(f"nearest neighbours need at least 2 rows, got {rows}")
    candidates = torch.randperm(rows, generator=generator)[:pool] if rows > pool else torch.arange(rows)
    nearest = torch.empty(rows, dtype=torch.long)
    for start in range(0, rows, chunk):
        queries = features[start : start + chunk]
        own = torch.arange(start, start + len(queries))
        best = torch.full((len(queries),), torch.inf)
        best_index = torch.zeros(len(queries), dtype=torch.long)
        for block in range(0, len(candidates), chunk):
            index = candidates[block : block + chunk]
            distances = torch.cdist(queries, features[index])
            distances[own[:, None] == index[None, :]] = torch.inf  # a row is not its own neighbour
            value, position = distances.min(dim=1)
            closer = value < best
            best = torch.where(closer, value, best)
            best_index = torch.where(closer, index[position], best_index)
        nearest[start : start + len(queries)] = best_index
    return nearest


def munge(
    rows: torch.Tensor,
    neighbours: torch.Tensor,
    groups: FeatureGroups,
    generator: torch.Generator,
    p: float,
    s: float,
) -> torch.Tensor:
    """One MUNGE row per row of ``rows``, whose nearest neighbours are ``neighbours`` (the same shape; see
    the module docstring): each column group is swapped for the neighbour's with probability ``p``; a
    swapped continuous value is drawn from ``N(neighbour, |row − neighbour| / s)``, except where the
    neighbour's value is imputed."""
    swap = (torch.rand(len(rows), groups.count, generator=generator) < p)[:, groups.column]
    spread = (rows - neighbours).abs() / s
    noise = torch.randn(rows.shape, generator=generator) * spread
    noisy = groups.continuous & ~_imputed(neighbours, groups)
    return torch.where(swap, torch.where(noisy, neighbours + noise, neighbours), rows)


def mixup(
    rows: torch.Tensor,
    partners: torch.Tensor,
    groups: FeatureGroups,
    generator: torch.Generator,
    alpha: float,
) -> torch.Tensor:
    """One mixup row per row of ``rows`` and its random partner: continuous values
    ``λ·row + (1 − λ)·partner`` with ``λ ~ Beta(alpha, alpha)`` per row; the other features, and values
    imputed in the row they are taken from, come whole from the row with the larger weight."""
    lam = _beta(len(rows), alpha, generator)[:, None]
    nearer = torch.where(lam >= 0.5, rows, partners)
    mixed = lam * rows + (1.0 - lam) * partners
    blended = groups.continuous & ~_imputed(rows, groups) & ~_imputed(partners, groups)
    return torch.where(blended, mixed, nearer)


@dataclass(frozen=True)
class Synthesis:
    """How to make synthetic rows: ``kind`` (``munge`` or ``mixup``), ``factor`` rows per training row
    (within ``max_rows`` in all), the methods' parameters, and the seed that makes them the same on
    every run."""

    kind: str
    factor: int
    seed: int
    munge_p: float = 0.5
    munge_s: float = 1.0
    mixup_alpha: float = 0.4
    max_rows: int | None = None
    """Synthetic rows in all at most (:meth:`factor_for` lowers the factor to fit)."""
    max_training_rows: int | None = None
    """No synthetic rows for a training split of more rows than this (``distill.synthetic: auto``)."""

    def __post_init__(self) -> None:
        if self.kind not in SYNTHETIC_KINDS[:2]:
            raise ValueError(f"synthetic rows are made by munge or mixup, got {self.kind!r}")

    def factor_for(self, rows: int) -> int:
        """Synthetic rows per row for ``rows`` training rows: :attr:`factor`, lowered so that they stay
        within :attr:`max_rows` (0 when the training rows alone are more, when they are more than
        :attr:`max_training_rows`, or fewer than 2)."""
        if rows < 2 or (self.max_training_rows is not None and rows > self.max_training_rows):
            return 0
        if self.max_rows is None:
            return self.factor
        return min(self.factor, self.max_rows // max(rows, 1))

    def rows(
        self,
        features: torch.Tensor,
        groups: FeatureGroups,
        factor: int | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``factor`` (default: :attr:`factor`) synthetic rows per row of ``features``, stacked:
        ``[factor · rows, n_features]`` float32, written into ``out`` when given. They are made
        :data:`GENERATE_CHUNK` rows at a time, so the working memory beyond ``out`` stays bounded."""
        generator = torch.Generator().manual_seed(self.seed)
        count = self.factor if factor is None else factor
        n = len(features)
        if out is None:
            out = torch.empty((count * n, features.shape[1]), dtype=torch.float32)
        if count == 0 or n < 2:
            return out[:0]
        neighbours = nearest_neighbours(features.float(), generator) if self.kind == "munge" else None
        for repeat in range(count):
            partners = torch.randperm(n, generator=generator) if neighbours is None else neighbours
            for start in range(0, n, GENERATE_CHUNK):
                stop = min(start + GENERATE_CHUNK, n)
                rows, others = features[start:stop].float(), features[partners[start:stop]].float()
                if self.kind == "munge":
                    made = munge(rows, others, groups, generator, self.munge_p, self.munge_s)
                else:
                    made = mixup(rows, others, groups, generator, self.mixup_alpha)
                out[repeat * n + start : repeat * n + stop] = made
        return out


def _imputed(features: torch.Tensor, groups: FeatureGroups) -> torch.Tensor:
    """``[rows, features]``: whether the feature's column is flagged missing in that row."""
    flagged = groups.flag >= 0
    values = features[:, groups.flag.clamp(min=0)]
    return flagged & (values > 0.5)


def _beta(count: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` draws of Beta(alpha, alpha), seeded by ``generator`` (torch's sampler takes none)."""
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    return torch.from_numpy(rng.beta(alpha, alpha, count).astype(np.float32))
