"""Google's run_squad.py (the PyPI wheel bert-tensorflow==1.0.4, google-research/bert's code) as
an oracle: its reader, feature conversion and write_predictions, run under a stand-in for the
TF1 calls they make (tf.flags is absl's, tf.gfile is open, tf.logging is silent) so neither
TensorFlow 1 nor its modeling code is needed. Used by tests/test_squad.py and bench/bench_squad.py.

  python bench/peers/google_squad.py features FILE VOCAB OUT.jsonl [--training] [--v2]
  python bench/peers/google_squad.py predict FILE VOCAB LOGITS.npz OUT_DIR [LOGITS OUT ...] [--v2]
  python bench/peers/google_squad.py time FILE VOCAB          # conversion seconds, as JSON

features: one JSON line per feature (example_index, doc_span_index, input_ids and segment_ids
up to the mask's length, start_position, end_position). predict: LOGITS.npz holds start_logits
and end_logits [N, max_seq_length] in Google's feature order (one conversion, any number of
LOGITS / OUT_DIR pairs); writes into each OUT_DIR predictions.json,
nbest_predictions.json (and null_odds.json) with Google's defaults (n_best 20, max answer 30,
threshold 0).
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types


def load_google():
    """bert.run_squad and bert.tokenization with the stand-ins in place."""
    from absl import flags

    spec = importlib.util.find_spec("bert")
    if spec is None:
        sys.exit("bert-tensorflow is not installed: pip install bert-tensorflow==1.0.4")
    folder = spec.submodule_search_locations[0]
    noop = lambda *a, **k: None  # noqa: E731
    v1 = types.ModuleType("tensorflow.compat.v1")
    v1.flags = flags
    v1.gfile = types.SimpleNamespace(Open=open, GFile=open)
    v1.logging = types.SimpleNamespace(info=noop, warning=noop, set_verbosity=noop, INFO=0)
    tf = types.ModuleType("tensorflow")
    tf.compat = types.SimpleNamespace(v1=v1)
    tf.flags, tf.gfile, tf.logging = v1.flags, v1.gfile, v1.logging
    sys.modules.update({"tensorflow": tf, "tensorflow.compat": tf.compat,
                        "tensorflow.compat.v1": v1})
    package = types.ModuleType("bert")
    package.__path__ = [folder]
    sys.modules["bert"] = package
    for name in ("modeling", "optimization"):  # TF1 model code run_squad imports, unused here
        sys.modules[f"bert.{name}"] = types.ModuleType(f"bert.{name}")
        setattr(package, name, sys.modules[f"bert.{name}"])

    def load(name):
        module_spec = importlib.util.spec_from_file_location(f"bert.{name}",
                                                             os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"bert.{name}"] = module
        module_spec.loader.exec_module(module)
        return module

    tokenization = load("tokenization")
    run_squad = load("run_squad")
    return run_squad, tokenization


def convert(run_squad, tokenization, path, vocab, training, v2):
    run_squad.FLAGS(["google_squad", f"--version_2_with_negative={v2}"])
    tokenizer = tokenization.FullTokenizer(vocab, do_lower_case=True)
    examples = run_squad.read_squad_examples(path, is_training=training)
    features = []
    run_squad.convert_examples_to_features(examples, tokenizer, 384, 128, 64, training,
                                           features.append)
    return examples, features


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["features", "predict", "time"])
    p.add_argument("args", nargs="+")
    p.add_argument("--training", action="store_true")
    p.add_argument("--v2", action="store_true")
    a = p.parse_args()
    run_squad, tokenization = load_google()
    if a.command == "time":
        path, vocab = a.args
        t0 = time.time()
        _, features = convert(run_squad, tokenization, path, vocab, False, a.v2)
        print(json.dumps({"seconds": time.time() - t0, "features": len(features)}))
    elif a.command == "features":
        path, vocab, out = a.args
        _, features = convert(run_squad, tokenization, path, vocab, a.training, a.v2)
        with open(out, "w") as f:
            for feat in features:
                n = sum(feat.input_mask)
                f.write(json.dumps({"example_index": feat.example_index,
                                    "doc_span_index": feat.doc_span_index,
                                    "input_ids": feat.input_ids[:n],
                                    "segment_ids": feat.segment_ids[:n],
                                    "start_position": feat.start_position,
                                    "end_position": feat.end_position}) + "\n")
    else:
        import numpy as np

        path, vocab, *pairs = a.args  # LOGITS.npz OUT_DIR [LOGITS.npz OUT_DIR ...]
        examples, features = convert(run_squad, tokenization, path, vocab, False, a.v2)
        for logits, out in zip(pairs[::2], pairs[1::2]):
            arrays = np.load(logits)
            results = [run_squad.RawResult(
                unique_id=f.unique_id, start_logits=[float(x) for x in arrays["start_logits"][i]],
                end_logits=[float(x) for x in arrays["end_logits"][i]])
                for i, f in enumerate(features)]
            os.makedirs(out, exist_ok=True)
            run_squad.write_predictions(examples, features, results, 20, 30, True,
                                        os.path.join(out, "predictions.json"),
                                        os.path.join(out, "nbest_predictions.json"),
                                        os.path.join(out, "null_odds.json"))


if __name__ == "__main__":
    main()
