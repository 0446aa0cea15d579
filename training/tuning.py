"""``credref train --trials N``: a seeded Optuna search over LightGBM's parameters.

A search runs for each kind the selection chooses between (:data:`TUNED_KINDS`: the
monotone tree model and its additive variant, which want different parameters: one tree
per feature needs more rounds and smaller leaves); the unconstrained model, a measurement
only, takes the monotone model's. Each trial fits its kind on the training window and
scores it on the out-of-time validation window, never on the test rows. Trials are pruned
on the validation loss while they grow (median rule), so bad regions cost little. Every
trial is a nested MLflow run with its parameters and validation AUC; the best parameters
are then refitted and checked by ``train()`` exactly as fixed ones are.

The search starts from :func:`training.models.scaled_defaults`: ``min_data_in_leaf`` grows with the
training set (a fixed 200 is too coarse for a few thousand rows and too fine for
millions), so the first trial is already sensible at any size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import optuna

from scoring.spec import CREDREF, ModelSpec
from training.data import Split
from training.evaluate import auc
from training.models import fit_booster, scaled_defaults

logger = logging.getLogger(__name__)

TUNED_KINDS = ("monotone", "additive")
PRUNE_EVERY = 10  # boosting rounds between reports to the pruner


def suggest(trial, n_train: int) -> dict:
    """The search space; ``min_data_in_leaf``'s range scales with the training set."""
    low = max(5, n_train // 20_000)
    high = max(low + 1, min(5000, n_train // 50))
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", low, high, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0),
    }


@dataclass
class Tuned:
    params: dict
    valid_auc: float  # the best trial's
    trials: int
    pruned: int
    start_auc: float | None = None  # the first trial's: the parameters as given

    def summary(self, kind: str) -> str:
        """One line for the analyst: what the search found against where it started."""
        gain = (
            f"{self.valid_auc - self.start_auc:+.4f} against the parameters as given "
            f"({self.start_auc:.4f})"
            if self.start_auc is not None
            else "the parameters as given were pruned"
        )
        found = "nothing better than the start" if gain.startswith("+0.0000") else gain
        return (
            f"tuning {kind}: best validation AUC {self.valid_auc:.4f} of {self.trials} trials "
            f"({self.pruned} pruned): {found}"
        )


def _pruning(trial):
    """A LightGBM callback: report the validation loss, stop a trial the pruner drops."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        if env.iteration % PRUNE_EVERY:
            return
        _, _, value, higher_better = env.evaluation_result_list[0]
        trial.report(value if higher_better else -value, env.iteration)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {env.iteration}")

    return callback


def tune(
    train: Split,
    valid: Split,
    base: dict,
    trials: int,
    seed: int,
    rounds: int,
    kind: str = "monotone",
    spec: ModelSpec = CREDREF,
) -> Tuned:
    """Search ``trials`` parameter sets for ``kind`` (seeded TPE, median pruning);
    returns the best."""

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5 * PRUNE_EVERY)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    n = len(train.y)
    start = {**scaled_defaults(n), **base}
    study.enqueue_trial({k: start[k] for k in scaled_defaults(n)})  # the fixed config first

    def objective(trial) -> float:
        params = {**base, **suggest(trial, n)}
        score = None
        # A pruned trial's run ends FINISHED, tagged pruned: stopping it early is the
        # search working, not a failure.
        with mlflow.start_run(nested=True, run_name=f"{kind} trial {trial.number}"):
            mlflow.set_tag("trial_kind", kind)
            mlflow.log_params({f"trial_{k}": v for k, v in params.items()})
            try:
                booster = _fit(kind, train, valid, params, seed, rounds, trial, spec)
            except optuna.TrialPruned:
                mlflow.set_tag("trial_state", "pruned")
            else:
                score = auc(valid.y, booster.predict(valid.X, raw_score=True))
                if score is None:
                    raise ValueError("the validation window has one outcome class")
                mlflow.log_metric("valid_auc", score)
                mlflow.set_tag("trial_state", "complete")
        if score is None:
            raise optuna.TrialPruned()
        logger.info("%s trial %d of %d: validation AUC %.4f", kind, trial.number + 1, trials, score)
        return float(score)

    study.optimize(objective, n_trials=trials)
    done = study.trials
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in done)
    best = {**base, **study.best_trial.params}
    start = done[0].value if done[0].state == optuna.trial.TrialState.COMPLETE else None
    tuned = Tuned(best, float(study.best_value), trials, pruned, start)
    logger.info("%s", tuned.summary(kind))
    return tuned


def _fit(kind: str, train: Split, valid: Split, params: dict, seed: int, rounds: int, trial, spec):
    return fit_booster(
        kind, train, valid, params, seed, rounds, callbacks=[_pruning(trial)], spec=spec
    )
