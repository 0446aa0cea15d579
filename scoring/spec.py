"""What the training and scoring core needs to know of a feature catalogue: one object,
passed as an argument, so the same code trains and scores a model on any catalogue.

A :class:`ModelSpec` names the features in matrix order, each one's monotone direction
(+1: more of it, more risk; -1: less risk; 0: free), the categories of the categorical
ones, the reason code each feature reports under, and the policy override (a feature
whose positive value forces class D with its own reason first). :data:`CREDREF` is
credref's own catalogue (:mod:`features.catalogue`), the default everywhere; a model
carries its spec in its artefact (``scoring.json``), so it is served with the spec it
was trained on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from features.catalogue import (
    CATEGORIES,
    FEATURES,
    NO_ADVERSE,
    OUTCOME,
    REASON_EVIDENCE,
    REASONS,
    catalogue_version,
)

#: credref's slicing dimensions (``training.evaluate.slice_frame`` derives two of them).
CREDREF_SLICES = ("city", "org_form", "industry", "age_band")

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class ModelSpec:
    features: tuple[str, ...]
    monotone: tuple[int, ...]  # one per feature
    categories: Mapping[str, tuple[str, ...]]  # the categorical features' categories
    reason_of: Mapping[str, str | None]  # feature -> its reason code (None: none)
    reasons: tuple[str, ...]  # every reason code, in the order ties are broken
    no_adverse: str = "R00"  # the reason when nothing pushes risk up
    override_feature: str | None = None  # positive: class D, whatever the model says
    override_reason: str | None = None  # the override's reason, then first
    #: features that say where T stands in the calendar: they move the point-in-time PD,
    #: never the score, the class or a reason (``scoring.model``)
    calendar: tuple[str, ...] = ()
    #: reason -> conditions (feature, operator, value), any of which makes its text true;
    #: a reason without an entry is served on its contributions alone
    evidence: Mapping[str, tuple[tuple[str, str, float], ...]] = field(default_factory=dict)
    #: feature -> the edges of the bands the standing reads it in (features that grow
    #: with every day: age, days since a record); see :func:`band_floor`
    bands: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    name: str = field(default="custom", compare=False)
    #: what the label means (the score guide and the model card say it)
    outcome: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.monotone) != len(self.features):
            raise ValueError("one monotone direction per feature")
        unknown = set(self.categories) - set(self.features)
        unknown |= {r for r in self.reason_of.values() if r} - set(self.reasons)
        if self.override_feature is not None and self.override_feature not in self.features:
            unknown.add(self.override_feature)
        unknown |= set(self.calendar) - set(self.features)
        unknown |= set(self.bands) - set(self.features)
        unknown |= set(self.evidence) - set(self.reasons)
        unknown |= {c[0] for conds in self.evidence.values() for c in conds} - set(self.features)
        if any(c[1] not in _OPS for conds in self.evidence.values() for c in conds):
            raise ValueError(f"evidence operators are {sorted(_OPS)}")
        if any(self.reason_of.get(f) for f in self.calendar):
            raise ValueError("a calendar feature is never a reason")
        if unknown:
            raise ValueError(f"the spec names what it does not define: {sorted(unknown)}")
        if any(d not in (-1, 0, 1) for d in self.monotone):
            raise ValueError("monotone directions are -1, 0 or +1")

    @property
    def categorical(self) -> list[str]:
        return [f for f in self.features if f in self.categories]

    @cached_property
    def category_codes(self) -> dict[str, dict[str, float]]:
        """category -> its code (its position), as LightGBM numbers a pandas categorical."""
        return {n: {c: float(i) for i, c in enumerate(cs)} for n, cs in self.categories.items()}

    @cached_property
    def reason_matrix(self) -> np.ndarray:
        """features x reasons, 1 where a feature reports under a reason."""
        m = np.zeros((len(self.features), len(self.reasons)))
        for i, name in enumerate(self.features):
            code = self.reason_of.get(name)
            if code is not None:
                m[i, self.reasons.index(code)] = 1.0
        return m

    @cached_property
    def calendar_cols(self) -> np.ndarray:
        """Positions of the calendar features in the matrix."""
        return np.asarray([self.features.index(f) for f in self.calendar], dtype=np.int64)

    @cached_property
    def _evidence_plan(self) -> list[tuple[int, list[tuple[int, Any, float]]]]:
        """Each reason with conditions: its position, and (column, operator, value) per
        condition (looked up once: the service asks for one row at a time)."""
        return [
            (k, [(self.features.index(n), _OPS[op], v) for n, op, v in conds])
            for k, code in enumerate(self.reasons)
            if (conds := self.evidence.get(code))
        ]

    def evidence_mask(self, X: np.ndarray) -> np.ndarray:
        """rows x reasons, True where the reason's text is borne out by the row's features
        (every row for a reason without evidence conditions)."""
        out = np.ones((len(X), len(self.reasons)), dtype=bool)
        with np.errstate(invalid="ignore"):  # NaN compares False: no evidence
            for k, conds in self._evidence_plan:
                held = np.zeros(len(X), dtype=bool)
                for col, op, value in conds:
                    held |= op(X[:, col], value)
                out[:, k] = held
        return out

    @property
    def override_col(self) -> int | None:
        return None if self.override_feature is None else self.features.index(self.override_feature)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "outcome": self.outcome,
                "features": list(self.features),
                "monotone": list(self.monotone),
                "categories": {k: list(v) for k, v in self.categories.items()},
                "reason_of": dict(self.reason_of),
                "reasons": list(self.reasons),
                "no_adverse": self.no_adverse,
                "override_feature": self.override_feature,
                "override_reason": self.override_reason,
                "calendar": list(self.calendar),
                "evidence": {k: [list(c) for c in v] for k, v in self.evidence.items()},
                "bands": {k: list(v) for k, v in self.bands.items()},
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        d = json.loads(text)
        return cls(
            features=tuple(d["features"]),
            monotone=tuple(d["monotone"]),
            categories={k: tuple(v) for k, v in d["categories"].items()},
            reason_of=d["reason_of"],
            reasons=tuple(d["reasons"]),
            no_adverse=d["no_adverse"],
            override_feature=d["override_feature"],
            override_reason=d["override_reason"],
            calendar=tuple(d.get("calendar", ())),
            evidence={k: tuple(tuple(c) for c in v) for k, v in d.get("evidence", {}).items()},
            bands={k: tuple(v) for k, v in d.get("bands", {}).items()},
            name=d.get("name", "custom"),
            outcome=d.get("outcome", ""),
        )

    @property
    def version(self) -> str:
        """The catalogue version a training set and a model carry: credref's own, or the
        spec's name and a digest of its definition (a changed spec is another version)."""
        if self.name == "credref":
            return catalogue_version()
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"

    @property
    def slices(self) -> tuple[str, ...]:
        """The dimensions quality is sliced by: credref's (city, form, industry, age) or,
        for another catalogue, its categorical features."""
        return CREDREF_SLICES if self.name == "credref" else tuple(self.categorical)


def band_floor(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Each value as the lower edge of its band (0, then ``edges``): 0.4 and 0.9 years
    both read as 0, 1.5 as 1, 12 as 10; NaN stays NaN."""
    lows = np.asarray((0.0, *edges))
    idx = np.searchsorted(lows, values, side="right") - 1
    out = lows[np.clip(idx, 0, len(lows) - 1)]
    return np.where(np.isnan(values), np.nan, np.where(idx < 0, values, out))


def load_spec(reference: str) -> ModelSpec:
    """A spec named ``module:NAME`` (importable) or ``path/to/file.py:NAME``, as
    ``credref train --spec`` and a config's ``[model] spec`` name one."""
    where, _, name = reference.rpartition(":")
    if not where or not name:
        raise ValueError("a spec is named MODULE:NAME or FILE.py:NAME")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"no spec file {where}")
        name_in_modules = f"credref_spec_{path.stem}"
        loader = importlib.util.spec_from_file_location(name_in_modules, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name_in_modules] = module  # dataclasses look their module up there
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"cannot import the spec's module {where}") from e
    found = getattr(module, name, None)
    if not isinstance(found, ModelSpec):
        raise ValueError(f"{reference} is not a ModelSpec")
    return found


def credref_spec() -> ModelSpec:
    """credref's catalogue as a spec: its features, directions, categories and reasons,
    and the serious-list override (R08)."""

    return ModelSpec(
        features=tuple(f.name for f in FEATURES),
        monotone=tuple(f.monotone for f in FEATURES),
        categories={
            f.name: tuple(CATEGORIES[f.name]) for f in FEATURES if f.value_type == "category"
        },
        reason_of={f.name: f.reason for f in FEATURES},
        reasons=tuple(r.code for r in REASONS),
        no_adverse=NO_ADVERSE.code,
        override_feature="serious_listed",
        override_reason="R08",
        calendar=tuple(f.name for f in FEATURES if f.calendar),
        evidence=REASON_EVIDENCE,
        bands={f.name: f.bands for f in FEATURES if f.bands},
        name="credref",
        outcome=OUTCOME,
    )


#: credref's own catalogue: the default of every training and scoring function.
CREDREF = credref_spec()
