"""The scoring artefact: encoded features -> raw margin -> calibrated PD -> score 0-1000
-> class A-D + reasons, with their texts.

Rating philosophy (DOMAIN.md §6; README, "What a class means"). Two readings of one
model:

* the **PD** is point-in-time: the probability of an adverse record in the next 12
  months from the day, the calendar features (``ModelSpec.calendar``: where the day
  stands in the reporting calendar) included, so it is calibrated on every day;
* the **score, class and reasons** are the household's standing on its records: the
  same model read with the calendar features at one fixed reference position (the day
  between filing periods, :data:`CALENDAR_REFERENCE`) and the features that grow with
  every day (age, days since a record) at the lower edge of their published band
  (``ModelSpec.bands``), calibrated to the long-run (all-calendar) outcome rate. They
  move when the household's records move or on the dated day one of its records or its
  registration enters a new band, never with the season, and no reason ever comes from
  a calendar feature.

One module, one object for batch scoring, Spark, the MLflow pyfunc and the online
service, so every path gives the same answer for the same features. It depends on the
catalogue, numpy, pandas and LightGBM only: a service worker importing it loads neither
DuckDB, sqlglot nor MLflow (a test checks). Fitting the calibration is training's work
(:mod:`training.calibration`).

* Calibration: Platt scaling of the raw margin, fitted on the validation snapshots.
* Score: points to double the odds. score = base_score + pdo / ln 2 * (ln(odds) -
  ln(base_odds)), odds = (1 - PD) / PD (good : bad); clipped to 0-1000 and rounded.
  Defaults: 600 points at odds 50:1, 40 points to double the odds. Higher = lower risk.
* Classes: A (low) - D (high), as in SAMR's classification (国市监信发〔2022〕6号): fixed
  bands of the long-run PD, set in the training config and published with each model
  version in its score guide (:mod:`training.guide`).
* Policy override: a household on the serious illegal and dishonest list is class D,
  and R08 is its first reason, whatever the model says.
* Reasons: at most four catalogue reason codes, among those whose text the household's
  features bear out (``ModelSpec.evidence``), whose features push the standing's
  margin up the most (TreeSHAP contributions, or the points table for the additive model, summed per
  reason code); ``R00`` when nothing pushes risk up.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalogue import NO_ADVERSE, REASONS
from features.elapsed import calendar_brackets
from scoring.spec import CREDREF, ModelSpec, band_floor

CLASSES = ("A", "B", "C", "D")
#: Where the score, the class and the reasons read the calendar features: as on a day
#: between filing periods (31 December: every due report's fate known, none pending).
CALENDAR_REFERENCE = {"reporting_cycle_day": 153.0, "open_report_unfiled_days": 0.0}
MAX_REASONS = 4
_FEW_ROWS = 8  # up to this many rows, points are looked up in plain Python


# --- the encoded matrix: every scoring path's input -----------------------------------


def encode(df: pd.DataFrame, spec: ModelSpec = CREDREF) -> np.ndarray:
    """The catalogue's features as one float matrix: categories by code, NaN if missing.

    The fast form every scoring path uses (batch, pyfunc, online); equal, as LightGBM
    input, to :func:`model_matrix` (a pandas categorical enters LightGBM as its code).
    An unknown category counts as missing, as it does in the categorical.
    """
    missing = [f for f in spec.features if f not in df.columns]
    if missing:
        raise ValueError(f"input lacks catalogue features: {missing}")
    codes = spec.category_codes
    out = np.empty((len(df), len(spec.features)))
    for j, name in enumerate(spec.features):
        col = df[name]
        if name in codes:
            out[:, j] = col.astype("object").map(codes[name]).to_numpy(dtype=float)
        else:
            out[:, j] = pd.to_numeric(col, errors="raise").to_numpy(dtype=float, na_value=np.nan)
    return out


def encode_row(row: dict, spec: ModelSpec = CREDREF) -> list[float]:
    """One household's features (a mapping) as a row of :func:`encode`, without pandas."""
    out = []
    codes = spec.category_codes
    for name in spec.features:
        v = row[name]
        if name in codes:
            out.append(codes[name].get(v, math.nan))
        else:
            out.append(math.nan if v is None else float(v))
    return out


# --- the additive model's exact form ---------------------------------------------------


@dataclass
class PointsTable:
    """Exact additive form of a booster whose every tree splits on one feature.

    margin(x) = base + sum_j points_j(x_j). Numeric: ``points[k]`` applies to
    thresholds[k-1] < x <= thresholds[k] (with -inf and +inf at the ends), ``nan``
    to a missing value. Categorical: one value per category and one for missing.
    The points are the booster's own TreeSHAP contributions, so they are also its
    SHAP values.
    """

    base: float
    numeric: dict[str, dict]  # name -> {"thresholds": [...], "points": [...], "nan": float}
    categorical: dict[str, dict]  # name -> {"points": {category: float}, "nan": float}
    spec: ModelSpec = field(default=CREDREF, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Lookup arrays per feature, in the spec's order, for the encoded matrix.
        self._lookups: list[tuple[np.ndarray | None, np.ndarray, float]] = []
        for name in self.spec.features:
            if name in self.numeric:
                spec = self.numeric[name]
                th = np.asarray(spec["thresholds"], float)
                pts = np.asarray(spec["points"])
            else:  # categorical: points indexed by the category's code
                spec = self.categorical[name]
                th = None
                cats = self.spec.categories[name]
                pts = np.asarray([spec["points"].get(c, spec["nan"]) for c in cats])
            self._lookups.append((th, pts, float(spec["nan"])))
        self._py_lookups = [
            (None if th is None else th.tolist(), pts.tolist(), nan)
            for th, pts, nan in self._lookups
        ]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature points for an encoded matrix (see :func:`training.data.encode`)."""
        if X.shape[0] <= _FEW_ROWS:
            return np.asarray([self._row_points(row) for row in X.tolist()]).reshape(
                X.shape[0], len(self.spec.features)
            )
        out = np.empty((X.shape[0], len(self.spec.features)))
        for j, (th, pts, nan) in enumerate(self._lookups):
            x = X[:, j]
            missing = np.isnan(x)
            if th is not None:
                idx = np.minimum(np.searchsorted(th, x, side="left"), len(pts) - 1)
            else:
                idx = np.where(missing, 0, x).astype(np.int64)
            out[:, j] = np.where(missing, nan, pts[idx])
        return out

    def _row_points(self, row: list[float]) -> list[float]:
        """The same lookup for one row in plain Python: an online request is one row, and
        two dozen tiny numpy calls cost more than the lookups themselves."""
        out = []
        for x, (th, pts, nan) in zip(row, self._py_lookups, strict=True):
            if x != x:  # NaN: missing
                out.append(nan)
            elif th is None:
                out.append(pts[int(x)])
            else:
                out.append(pts[min(bisect.bisect_left(th, x), len(pts) - 1)])
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        return self.base + self.contributions(X).sum(axis=1)

    def to_json(self) -> str:
        return json.dumps(
            {"base": self.base, "numeric": self.numeric, "categorical": self.categorical}
        )

    @classmethod
    def from_json(cls, text: str, spec: ModelSpec = CREDREF) -> PointsTable:
        d = json.loads(text)
        return cls(d["base"], d["numeric"], d["categorical"], spec)

    def as_frame(self, factor: float = 1.0) -> pd.DataFrame:
        """Readable table: feature, bin, points (times ``factor``, e.g. into score points)."""
        rows = []
        for name, spec in self.numeric.items():
            th = spec["thresholds"]
            for k, p in enumerate(spec["points"]):
                lo = "-inf" if k == 0 else f"{th[k - 1]:g}"
                hi = "+inf" if k == len(th) else f"{th[k]:g}"
                rows.append((name, f"({lo}, {hi}]", p * factor))
            rows.append((name, "missing", spec["nan"] * factor))
        for name, spec in self.categorical.items():
            rows.extend((name, f"= {c}", p * factor) for c, p in spec["points"].items())
        return pd.DataFrame(rows, columns=["feature", "bin", "points"])


# --- score scale, reasons ---------------------------------------------------------------


@dataclass(frozen=True)
class ScoreScale:
    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 40.0

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    def score(self, pd_: np.ndarray) -> np.ndarray:
        p = np.clip(pd_, 1e-12, 1 - 1e-12)
        raw = self.base_score + self.factor * (np.log((1 - p) / p) - math.log(self.base_odds))
        return np.clip(np.rint(raw), 0, 1000).astype(int)

    def odds(self, score: float) -> float:
        """The good:bad odds a score stands for."""
        return self.base_odds * math.exp((score - self.base_score) / self.factor)

    @classmethod
    def spanning(cls, risky_pd: float, safe_pd: float, low: float = 300, high: float = 800):
        """The scale that puts ``risky_pd`` at ``low`` points and ``safe_pd`` at ``high``
        (e.g. the validation's 1st and 99th percentiles): one that uses its range."""
        lo_odds = math.log((1 - risky_pd) / risky_pd)
        hi_odds = math.log((1 - safe_pd) / safe_pd)
        if hi_odds <= lo_odds:
            raise ValueError("the safe PD must be lower than the risky one")
        pdo = (high - low) * math.log(2.0) / (hi_odds - lo_odds)
        return cls(base_score=float(low), base_odds=math.exp(lo_odds), pdo=pdo)


def _detail(r) -> dict:
    g = r.guidance
    return {
        "code": r.code,
        "text_zh": r.text_zh,
        "text_en": r.text_en,
        "guidance": {
            "remedy": g.remedy,
            "text_zh": g.text_zh,
            "text_en": g.text_en,
            "source": g.source,
        },
    }


#: Every reason's details, built once: an answer carries up to four of them.
_DETAILS = {r.code: _detail(r) for r in (*REASONS, NO_ADVERSE)}


#: How a table (a scored frame, a file, an audit row) spells a row's reason codes; in
#: memory they are a tuple, best first.
REASON_SEPARATOR = ";"


def reason_details(codes: Iterable[str]) -> list[dict]:
    """Codes with their Chinese and English texts and what the household can do about
    each (the catalogue's guidance, with its legal source)."""
    return [_DETAILS[c] for c in codes]


def _by_reason(contributions: np.ndarray, spec: ModelSpec, borne_out: np.ndarray | None):
    """Contributions summed per reason code, zero where the reason's text is not borne
    out by the row's records (``ModelSpec.evidence_mask``)."""
    by_reason = contributions[:, : len(spec.features)] @ spec.reason_matrix
    return by_reason if borne_out is None else np.where(borne_out, by_reason, 0.0)


def reason_codes(
    contributions: np.ndarray,
    max_reasons: int = MAX_REASONS,
    spec: ModelSpec = CREDREF,
    borne_out: np.ndarray | None = None,
) -> list[list[str]]:
    """Top adverse reason codes per row from per-feature contributions to the margin,
    among those the row's records bear out (``borne_out``: rows x reasons).

    The readable, row-by-row definition; scoring uses :func:`reason_tuples`, which a test
    holds equal to it."""
    by_reason = _by_reason(contributions, spec, borne_out)
    order = np.argsort(-by_reason, axis=1, kind="stable")
    out = []
    for row, idx in zip(by_reason, order, strict=True):
        codes = [spec.reasons[k] for k in idx[:max_reasons] if row[k] > 1e-9]
        out.append(codes or [spec.no_adverse])
    return out


def reason_tuples(
    contributions: np.ndarray,
    serious: np.ndarray,
    spec: ModelSpec = CREDREF,
    borne_out: np.ndarray | None = None,
) -> np.ndarray:
    """Each row's reason codes (a tuple, best first), with the serious-list override: the
    same answer as :func:`reason_codes` plus the override, vectorised.

    The top codes of a row are few (at most four of nine), so rows are keyed by their
    code combination and each distinct combination is spelled out once.
    """
    by_reason = _by_reason(contributions, spec, borne_out)
    order = np.argsort(-by_reason, axis=1, kind="stable")[:, :MAX_REASONS]
    present = np.take_along_axis(by_reason, order, axis=1) > 1e-9
    none = len(spec.reasons)
    idx = np.where(present, order, none)
    if len(idx) <= 8:  # an online request: spelling each row costs less than grouping
        return _objects(
            [_label(row, s, spec) for row, s in zip(idx.tolist(), serious.tolist(), strict=True)]
        )
    key = np.zeros(len(idx), dtype=np.int64)
    for k in range(idx.shape[1]):
        key = key * (none + 1) + idx[:, k]
    key = key * 2 + serious.astype(np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    labels = []
    for u in uniq.tolist():
        is_serious, rest = u % 2, u // 2
        picked = []
        for _ in range(idx.shape[1]):
            rest, i = divmod(rest, none + 1)
            picked.append(i)
        labels.append(_label(picked[::-1], bool(is_serious), spec))
    return _objects(labels)[inverse.reshape(-1)]


def _objects(values: list) -> np.ndarray:
    """A one-dimensional object array of ``values`` (tuples stay whole: ``np.asarray``
    would make tuples of one length a second dimension)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _label(idx: list[int], serious: bool, spec: ModelSpec) -> tuple[str, ...]:
    """The reason codes of one row from its top reason indices (``len(spec.reasons)``
    marks "no further adverse reason"), with the policy override's reason first."""
    none = len(spec.reasons)
    codes = [spec.reasons[i] for i in idx if i != none] or [spec.no_adverse]
    if serious and spec.override_reason is not None:
        first = spec.override_reason
        codes = [first, *[c for c in codes if c not in (first, spec.no_adverse)]][:MAX_REASONS]
    return tuple(codes)


@dataclass
class ScoringModel:
    """A fitted, calibrated, scaled model. Build with :func:`training.calibration.make_scoring_model`."""

    booster: lgb.Booster
    kind: str
    #: Platt calibration of the margin on the day: the point-in-time PD
    calib_a: float
    calib_b: float
    #: long-run PD bands at the class cuts A|B, B|C, C|D
    class_thresholds: tuple[float, float, float]
    scale: ScoreScale
    points: PointsTable | None
    catalogue_version: str
    #: The catalogue it was trained on: the encoded matrix's columns, the reasons, the
    #: feature whose positive value forces class D, the calendar features.
    spec: ModelSpec = CREDREF
    #: Platt calibration of the standing's margin (calendar features at
    #: ``calendar_reference``) to the long-run outcome rate: the score's and class's PD
    standing_a: float | None = None
    standing_b: float | None = None
    calendar_reference: dict[str, float] = field(default_factory=dict)
    #: The score guide (:mod:`training.guide`), set when the version is evaluated
    guide: dict | None = None
    #: The PD on a day between two trained calendar positions moves from one to the other
    #: by the day (``features.elapsed.calendar_brackets``) instead of jumping half-way
    between_positions: bool = False

    def __post_init__(self) -> None:
        if self.standing_a is None or self.standing_b is None:
            self.standing_a, self.standing_b = self.calib_a, self.calib_b
        cols = [self.spec.features.index(f) for f in self.calendar_reference]
        self._ref_cols = np.asarray(cols, dtype=np.int64)
        self._ref_values = np.asarray(list(self.calendar_reference.values()), dtype=float)
        self._bands = [(self.spec.features.index(f), e) for f, e in self.spec.bands.items()]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.features

    def _serious(self, X: np.ndarray) -> np.ndarray:
        col = self.spec.override_col
        return np.zeros(len(X), dtype=bool) if col is None else X[:, col] > 0

    def at_reference(self, X: np.ndarray) -> np.ndarray:
        """What the score, the class and the reasons read: the matrix with the calendar
        features at the reference position, and the features that grow with every day
        (age, days since a record) at the lower edge of their published band, so the
        standing moves on the dated day a band is entered, not a little every day."""
        if not len(self._ref_cols) and not self._bands:
            return X
        out = X.copy()
        if len(self._ref_cols):
            out[:, self._ref_cols] = self._ref_values
        for j, edges in self._bands:
            out[:, j] = band_floor(out[:, j], edges)
        return out

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Raw margin for an encoded matrix (:func:`encode`)."""
        if self.points is not None:
            return self.points.margin(X)
        return self.booster.predict(X, raw_score=True)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the margin (no bias column)."""
        if self.points is not None:
            return self.points.contributions(X)
        return self.booster.predict(X, pred_contrib=True)[:, : len(self.spec.features)]

    def margin_on_the_day(self, X: np.ndarray) -> np.ndarray:
        """The margin of each row on its day: with ``between_positions``, the margins at the
        two trained calendar positions around the day, weighted by how far the day is from
        each (exact on the positions themselves), so the PD follows the days between them
        smoothly rather than in a step."""
        if not self.between_positions:
            return self.margin(X)
        cycle = self.spec.features.index("reporting_cycle_day")
        unfiled = self.spec.features.index("open_report_unfiled_days")
        (c0, u0), (c1, u1), w = calendar_brackets(X[:, cycle], X[:, unfiled])
        both = np.vstack([X, X])  # one model call for both positions (the service's row)
        n = len(X)
        both[:n, cycle], both[:n, unfiled] = c0, u0
        both[n:, cycle], both[n:, unfiled] = c1, u1
        m = self.margin(both)
        return (1.0 - w) * m[:n] + w * m[n:]

    def pd_from_margin(self, m: np.ndarray) -> np.ndarray:
        """The point-in-time PD of a margin on the day."""
        return 1.0 / (1.0 + np.exp(-(self.calib_a * m + self.calib_b)))

    def standing_pd(self, m: np.ndarray) -> np.ndarray:
        """The long-run PD of a standing's margin (:meth:`at_reference`)."""
        assert self.standing_a is not None and self.standing_b is not None  # __post_init__
        return 1.0 / (1.0 + np.exp(-(self.standing_a * m + self.standing_b)))

    def risk_class(self, pd_: np.ndarray, serious: np.ndarray) -> np.ndarray:
        """The class of a long-run PD: its fixed band; serious-list households D."""
        idx = np.searchsorted(np.asarray(self.class_thresholds), pd_, side="right")
        cls = np.asarray(CLASSES)[idx]
        return np.where(serious, "D", cls)

    def score_array(self, X: np.ndarray, with_reasons: bool = True) -> dict[str, np.ndarray]:
        """PD, score, class, override and (optionally) reasons for an encoded matrix.

        The one scoring function behind batch scoring, the pyfunc and the online service:
        the PD from the row as it is on its day, the rest from its standing."""
        serious = self._serious(X)
        standing_X = self.at_reference(X)
        if with_reasons:  # one pass gives both: the margin is the contributions' sum
            standing, contrib = self.explain(standing_X)
        else:
            standing, contrib = self.margin(standing_X), None
        on_the_day = self.margin_on_the_day(X) if standing_X is not X else standing
        long_run = self.standing_pd(standing)
        out = {
            "pd": self.pd_from_margin(on_the_day),
            "long_run_pd": long_run,
            "score": self.scale.score(long_run),
            "risk_class": self.risk_class(long_run, serious),
            "override": np.where(serious, "serious_list", ""),
        }
        if contrib is not None:
            out["reasons"] = reason_tuples(contrib, serious, self.spec, self.spec.evidence_mask(X))
        return out

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The margin and the per-feature contributions, from one evaluation.

        The margin is the bias plus the contributions (exact for the points table; for
        trees, LightGBM's contributions add up to the raw score)."""
        if self.points is not None:
            c = self.points.contributions(X)
            return self.points.base + c.sum(axis=1), c
        full = self.booster.predict(X, pred_contrib=True)
        return full.sum(axis=1), full[:, : len(self.spec.features)]

    def reasons(self, X: np.ndarray) -> np.ndarray:
        """Reason codes (a tuple per row, best first), from the standing; R08 first for a
        serious-list household."""
        standing_X = self.at_reference(X)
        borne_out = self.spec.evidence_mask(X)
        return reason_tuples(self.contributions(standing_X), self._serious(X), self.spec, borne_out)

    def score_frame(self, features: pd.DataFrame, with_reasons: bool = True) -> pd.DataFrame:
        """PD, score, class and reasons for rows holding the catalogue's features, as a
        table: each row's reasons spelt as one string (:data:`REASON_SEPARATOR`)."""
        X = encode(features, self.spec)
        out = self.score_array(X, with_reasons)
        if with_reasons:
            out["reasons"] = np.asarray(
                [REASON_SEPARATOR.join(codes) for codes in out["reasons"]], dtype=object
            )
        return pd.DataFrame(out, index=features.index)

    # --- persistence: plain files, so an artefact is readable without Python pickles ---

    def files(self) -> dict[str, str]:
        """The artefact as text files (name -> content): what ``save`` writes."""
        meta = {
            "kind": self.kind,
            "calib_a": self.calib_a,
            "calib_b": self.calib_b,
            "class_thresholds": list(self.class_thresholds),
            "scale": asdict(self.scale),
            "catalogue_version": self.catalogue_version,
            "standing_a": self.standing_a,
            "standing_b": self.standing_b,
            "calendar_reference": self.calendar_reference,
            "between_positions": self.between_positions,
        }
        out = {
            "booster.txt": self.booster.model_to_string(),
            "scoring.json": json.dumps(meta, indent=2),
            "spec.json": self.spec.to_json(),
        }
        if self.points is not None:
            out["points.json"] = self.points.to_json()
        if self.guide is not None:
            out["guide.json"] = json.dumps(self.guide, ensure_ascii=False, indent=2)
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in self.files().items():
            (folder / name).write_text(text)

    @classmethod
    def from_files(cls, files: dict[str, str]) -> ScoringModel:
        """Rebuild from :meth:`files` (e.g. shipped to Spark tasks with no shared disk)."""
        meta = json.loads(files["scoring.json"])
        # an artefact made before specs were stored was trained on credref's catalogue
        spec = ModelSpec.from_json(files["spec.json"]) if "spec.json" in files else CREDREF
        points = files.get("points.json")
        return cls(
            booster=lgb.Booster(model_str=files["booster.txt"]),
            kind=meta["kind"],
            calib_a=meta["calib_a"],
            calib_b=meta["calib_b"],
            class_thresholds=(
                meta["class_thresholds"][0],
                meta["class_thresholds"][1],
                meta["class_thresholds"][2],
            ),
            scale=ScoreScale(**meta["scale"]),
            points=PointsTable.from_json(points, spec) if points is not None else None,
            catalogue_version=meta["catalogue_version"],
            spec=spec,
            standing_a=meta.get("standing_a"),
            standing_b=meta.get("standing_b"),
            calendar_reference=meta.get("calendar_reference", {}),
            guide=json.loads(files["guide.json"]) if "guide.json" in files else None,
            between_positions=meta.get("between_positions", False),
        )

    @classmethod
    def load(cls, folder: Path) -> ScoringModel:
        names = ("booster.txt", "scoring.json", "points.json", "spec.json", "guide.json")
        return cls.from_files({n: (folder / n).read_text() for n in names if (folder / n).exists()})
