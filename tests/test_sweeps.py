"""bert_tf.sweeps: a search-space file is refused, naming the file and key, for every mistake
that would otherwise run a sweep that cannot give what it was written for (a misspelt limit
runs 20 trials, not 3; a metric logged only with --do_eval is never reported)."""

import math

import pytest

from bert_tf import sweeps
from tests.conftest import REPO

BASE = """\
script: run_classifier.py
primary_metric: eval/eval_accuracy
goal: maximize
search_space:
  learning_rate: {type: loguniform, min_value: 1.0e-6, max_value: 1.0e-3}
  train_batch_size: {type: choice, values: [16, 32]}
sampling: {type: random, seed: 3}
early_termination: {type: bandit, slack_amount: 0.02, delay_evaluation: 2}
limits: {max_total_trials: 3, max_concurrent_trials: 1}
flags: {task: MRPC, do_train: true, do_eval: true, eval_every_steps: 10}
"""


def spec_of(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return sweeps.load(str(path))


def test_a_good_file_loads_with_its_values(tmp_path):
    spec = spec_of(tmp_path, BASE)
    assert spec.max_total_trials == 3 and spec.seed == 3
    assert spec.bandit == sweeps.Bandit(None, 0.02, 1, 2)
    assert spec.space["learning_rate"].log_bounds() == (math.log(1e-6), math.log(1e-3))
    assert spec.check_flags(["--seed=5"])["seed"] == "5"
    for name in ("mrpc_tiny.yaml", "mrpc_lr.yaml"):
        sweeps.load(str(REPO / "configs" / "sweeps" / name)).check_flags([])


@pytest.mark.parametrize("old,new,message", [
    ("max_total_trials: 3", "max_total_trial: 3", "max_total_trial.*did you mean max_total_trials"),
    ("seed: 3", "sed: 3", "sampling: unknown key 'sed'"),
    ("delay_evaluation: 2", "delay_evalution: 2", "early_termination: unknown key"),
    ("{type: choice, values: [16, 32]}", "{type: choice, values: [16, 32], typo: 1}",
     "search_space.train_batch_size: unknown key 'typo'"),
    ("values: [16, 32]", "values: []", "non-empty list"),
    ("min_value: 1.0e-6, max_value: 1.0e-3", "min_value: 1.0e-3, max_value: 1.0e-6",
     "must be below"),
    ("min_value: 1.0e-6", "min_value: -13.8", "must be positive"),
])
def test_file_mistakes_name_the_key(tmp_path, old, new, message):
    assert old in BASE
    with pytest.raises(sweeps.SweepError, match=message) as e:
        spec_of(tmp_path, BASE.replace(old, new))
    assert str(tmp_path / "sweep.yaml") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("old,new,extra,message", [
    ("values: [16, 32]", "values: [16, big, 32]", [], "train_batch_size"),  # a middle value
    ("task: MRPC", "task: MRPX", [], "unknown task 'MRPX'"),
    ("do_eval: true, ", "", [], "needs both --do_train and --do_eval"),
    ("do_eval: true, eval_every_steps: 10", "eval_every_steps: 10", ["--nodo_train"],
     "nothing to do"),
    ("", "", ["--learning_rate_typo=1"], "has no flag --learning_rate_typo"),
    ("", "", ["--max_seq_length=0"], "max_seq_length=0"),
    ("", "", ["--num_train_epochs=0"], "num_train_epochs=0"),
    ("primary_metric: eval/eval_accuracy", "primary_metric: eval/eval_mcc", [],
     "never logs 'eval/eval_mcc'"),
])
def test_flags_the_script_would_refuse_are_refused_up_front(tmp_path, old, new, extra,
                                                            message):
    spec = spec_of(tmp_path, BASE.replace(old, new) if old else BASE)
    with pytest.raises(sweeps.SweepError, match=message):
        spec.check_flags(extra)


def test_an_eval_metric_needs_do_eval_and_sweeping_training_needs_do_train(tmp_path):
    no_eval = BASE.replace("early_termination: {type: bandit, slack_amount: 0.02, "
                           "delay_evaluation: 2}\n", "").replace(
        "do_eval: true, eval_every_steps: 10", "do_eval: false")
    with pytest.raises(sweeps.SweepError, match="add do_eval: true"):
        spec_of(tmp_path, no_eval).check_flags([])
    no_train = BASE.replace("early_termination: {type: bandit, slack_amount: 0.02, "
                            "delay_evaluation: 2}\n", "").replace(
        "do_train: true, do_eval: true, eval_every_steps: 10", "do_eval: true")
    with pytest.raises(sweeps.SweepError, match="would train nothing"):
        spec_of(tmp_path, no_train).check_flags([])
