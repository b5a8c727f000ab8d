"""Early termination: Azure ML's BanditPolicy as plain functions (`bandit_decision`) and as an
Optuna pruner (`BanditPruner`, imported from here on first use: Optuna is loaded then)."""

from __future__ import annotations

import functools
import math

from bert_tf.sweeps.spec import Bandit, SweepSpec


def _best(values, goal: str):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if goal == "maximize" else min(finite)


def bandit_applies(bandit: Bandit, report: int) -> bool:
    """Whether the policy judges a trial at its `report`-th report of the primary metric
    (counted from 1): at every multiple of evaluation_interval that is >= delay_evaluation."""
    return report % bandit.evaluation_interval == 0 and report >= bandit.delay_evaluation


def bandit_threshold(bandit: Bandit, goal: str, best: float) -> float:
    """The worst value a trial may have and go on, given the best trial's `best`:
    maximize: best / (1 + slack_factor) or best - slack_amount;
    minimize: best * (1 + slack_factor) or best + slack_amount."""
    if bandit.slack_factor is not None:
        return (best / (1 + bandit.slack_factor) if goal == "maximize"
                else best * (1 + bandit.slack_factor))
    return best - bandit.slack_amount if goal == "maximize" else best + bandit.slack_amount


def bandit_decision(bandit: Bandit, goal: str, report: int, own: dict,
                    others: list[dict]) -> tuple[bool, str]:
    """Azure ML's BanditPolicy for one trial at its report number `report` (from 1).

    Args:
        bandit: slack_factor or slack_amount, evaluation_interval, delay_evaluation.
        goal: "maximize" or "minimize".
        report: the report being judged (the trial's latest).
        own: the trial's reports {report number: value}.
        others: the reports of every other trial that counts (finished or running).
    Returns:
        (stop, reason): stop is True when the trial's best value up to `report` is worse than
        `bandit_threshold` of the best value any trial (this one included) reached by its own
        `report`-th report; trials that have not reported that often yet do not count. The
        reason is one line with the numbers.

    The semantics are Azure ML's BanditPolicy as its docs state them (the reference pages of
    azure.ai.ml.sweep.BanditPolicy and azureml.train.hyperdrive.BanditPolicy, and
    https://learn.microsoft.com/azure/machine-learning/how-to-tune-hyperparameters, "Bandit
    policy"):
    "each time the training script logs the primary metric counts as one interval"; "the policy
    applies every multiple of evaluation_interval that is greater than or equal to
    delay_evaluation"; a run whose best metric Y so far is such that Y * (1 + slack_factor)
    (maximizing) is below the best run's metric at that interval is cancelled; slack_amount is
    the same with an absolute distance. A trial whose values are all NaN or infinite is
    stopped whenever the policy applies and another trial has a finite value.
    """
    if not bandit_applies(bandit, report):
        return False, f"report {report}: the policy does not apply here"
    mine = _best([v for k, v in own.items() if k <= report], goal)
    curves = [own] + [c for c in others if report in c]
    best = _best([_best([v for k, v in c.items() if k <= report], goal) for c in curves], goal)
    if best is None:
        return False, f"report {report}: no finite value yet"
    limit = bandit_threshold(bandit, goal, best)
    slack = (f"/ (1 + {bandit.slack_factor:g})" if goal == "maximize" else
             f"* (1 + {bandit.slack_factor:g})") if bandit.slack_factor is not None else \
        (f"- {bandit.slack_amount:g}" if goal == "maximize" else f"+ {bandit.slack_amount:g}")
    if mine is None:
        return True, f"report {report}: no finite value, best {best:.4g}"
    worse = mine < limit if goal == "maximize" else mine > limit
    sign = ("<" if goal == "maximize" else ">") if worse else \
        (">=" if goal == "maximize" else "<=")
    return worse, (f"report {report}: best so far {mine:.4g} {sign} {best:.4g} {slack} = "
                   f"{limit:.4g} (best of {len(curves)} trial(s) at this report)")


@functools.cache
def _pruner_class():
    import optuna
    from optuna.trial import TrialState

    class BanditPruner(optuna.pruners.BasePruner):
        """Azure ML's BanditPolicy as an Optuna pruner (Optuna has none): see
        `bandit_decision`. Report the primary metric with `trial.report(value, step=n)`, n
        counting the reports from 1; the goal is the study's direction.

            BanditPruner(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5)
        """

        def __init__(self, slack_factor: float | None = None, slack_amount: float | None = None,
                     evaluation_interval: int = 1, delay_evaluation: int = 0):
            if (slack_factor is None) == (slack_amount is None):
                raise ValueError("give exactly one of slack_factor and slack_amount")
            self.bandit = Bandit(slack_factor, slack_amount, evaluation_interval,
                                 delay_evaluation)

        def prune(self, study, trial) -> bool:
            return self.verdict(study, trial)[0]

        def verdict(self, study, trial) -> tuple[bool, str]:
            """(prune, one-line reason) for `trial` (a FrozenTrial) at its latest report."""
            report = trial.last_step
            if report is None:
                return False, "no report yet"
            goal = ("maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE
                    else "minimize")
            others = [t.intermediate_values for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                        TrialState.RUNNING)) if t.number != trial.number]
            return bandit_decision(self.bandit, goal, report, trial.intermediate_values, others)

    return BanditPruner


def __getattr__(name):
    # `from bert_tf.sweeps.bandit import BanditPruner` imports Optuna then, not before: the
    # Bandit rule itself (bandit_decision) works without it.
    if name == "BanditPruner":
        return _pruner_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_pruner(spec: SweepSpec):
    """The pruner of the file's early_termination: a BanditPruner, or Optuna's NopPruner."""
    import optuna

    if spec.bandit is None:
        return optuna.pruners.NopPruner()
    b = spec.bandit
    return _pruner_class()(b.slack_factor, b.slack_amount, b.evaluation_interval,
                           b.delay_evaluation)
