"""Scoring script of a bert_tf model on an Azure ML managed online endpoint (init()/run() of
Azure's inference server, `azmlinfsrv`). It needs TensorFlow and tensorflow-text only: the model
is a SavedModel from export_model.py (or a run's --export=saved_model), tokenizer inside.

Request (JSON), like TensorFlow Serving's row format:
    {"instances": [{"text_a": "...", "text_b": "..."}, ...]}   a sentence-pair classifier
    {"instances": ["a text", {"text": "another"}, ...]}        one text (classifier or NER)
Response:
    {"predictions": [{"label": "1", "probabilities": {"0": 0.08, "1": 0.92}}, ...]}
    STS-B: {"predictions": [{"score": 3.7}, ...]}
    NER:   {"predictions": [{"entities": [{"type": "PER", "text": "Ada Lovelace",
                                            "start": 0, "end": 12, "score": 0.98}]}, ...]}
Bad requests (not JSON, no instances, an empty text, too many instances) are answered 400 with
{"error": "..."}; nothing raises into the server, so no stack trace reaches a client.

Served locally the same way, without Docker:
    AZUREML_MODEL_DIR=export/mrpc azmlinfsrv --entry_script azure/scoring/score.py --port 5001
"""

import json
import logging
import os

MAX_INSTANCES = 256  # per request: a bigger batch should be split by the client
MAX_CHARS = 100_000  # per text
MAX_TOTAL_CHARS = 1_000_000  # per request: beyond, a request outlives its timeout

_model = None
_info = None
logger = logging.getLogger("bert_tf.score")


class RequestError(ValueError):
    """A request this script answers with 400."""


def _find_export(root):
    """The folder under root (AZUREML_MODEL_DIR) that holds saved_model.pb."""
    for folder, _, files in sorted(os.walk(root)):
        if "saved_model.pb" in files and "serving_info.json" in files:
            return folder
    raise FileNotFoundError(f"no bert_tf export (saved_model.pb + serving_info.json) under "
                            f"{root}")


def threads(info, cores):
    """(inter-op, intra-op) TensorFlow threads for an export on `cores` cores, or None for
    TensorFlow's defaults (an export in one chain, e.g. for a GPU, or one that does not say).

    An export's forward pass is cut into serving_info.json's parallel_chains chains of kernels
    (bert_tf.serving.saved_model, "Threads"): one inter-op thread per chain, no more than the
    cores (extra chains wait their turn: 4 chains on 2 cores took 12.4 ms on 2 inter-op threads,
    15.1 ms on 4, bench/README.md), the cores shared among the chains' kernels."""
    chains = info.get("parallel_chains") or 1
    if chains <= 1:
        return None
    return min(chains, cores), max(1, cores // chains)


def _cores():
    """The cores this process may run on (Linux: its affinity; elsewhere: the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


ENVIRONMENT = ("TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS")


def configure_threads(info):
    """Set threads(info, this process's cores) before TensorFlow runs its first op. Each of
    TF_NUM_INTEROP_THREADS / TF_NUM_INTRAOP_THREADS set in the environment wins over its
    setting. Returns how the threads were chosen, for the log: "inter-op 2 (export), intra-op
    1 (export)", or "TensorFlow's defaults"."""
    import tensorflow as tf

    wanted = threads(info, _cores())
    if wanted is None:
        return "TensorFlow's defaults (a one-chain export)"
    setters = (tf.config.threading.set_inter_op_parallelism_threads,
               tf.config.threading.set_intra_op_parallelism_threads)
    said = []
    try:
        for name, value, setter, variable in zip(("inter-op", "intra-op"), wanted, setters,
                                                 ENVIRONMENT):
            if variable in os.environ:
                said.append(f"{name} {os.environ[variable]} ({variable})")
                continue
            setter(value)
            said.append(f"{name} {value} (the export's)")
    except RuntimeError as e:  # TensorFlow already ran in this process (a notebook, a test)
        logger.warning("TensorFlow's threads stay as they are (%s): the export is fastest "
                       "with %d inter-op and %d intra-op threads", e, *wanted)
        return "as they were (TensorFlow was already running)"
    return ", ".join(said)


def init():
    """Load the SavedModel once per worker, TensorFlow's threads set for it first."""
    global _model, _info
    folder = _find_export(os.environ.get("AZUREML_MODEL_DIR", "."))
    with open(os.path.join(folder, "serving_info.json"), encoding="utf-8") as f:
        _info = json.load(f)
    import tensorflow as tf

    configured = configure_threads(_info)
    import tensorflow_text  # noqa: F401 (registers FastWordpieceTokenizeWithOffsets)

    _model = tf.saved_model.load(folder)
    logger.info("loaded the %s model from %s; TensorFlow threads: %s",
                _info.get("task_name") or _info["model"], folder, configured)


def _text(value, where):
    if not isinstance(value, str):
        raise RequestError(f"{where}: a text must be a string, got {type(value).__name__}")
    if len(value) > MAX_CHARS:
        raise RequestError(f"{where}: {len(value)} characters, more than {MAX_CHARS}")
    return value


def parse_request(raw, info):
    """The request body -> (text_a list, text_b list or None). RequestError for a bad one."""
    try:
        body = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError as e:
        raise RequestError(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise RequestError('send {"instances": [...]}: one text or {"text_a": ..., "text_b": '
                           '...} per instance')
    instances = body["instances"]
    if not instances:
        raise RequestError("instances is empty")
    if len(instances) > MAX_INSTANCES:
        raise RequestError(f"{len(instances)} instances, more than {MAX_INSTANCES}: split the "
                           "request")
    pair = info["model"] == "classifier" and info.get("pair_task")
    text_a, text_b = [], []
    for i, instance in enumerate(instances):
        where = f"instance {i}"
        if isinstance(instance, dict):
            unknown = set(instance) - {"text", "text_a", "text_b"}
            if unknown:
                raise RequestError(f"{where}: unknown field(s) {sorted(unknown)}: use text, or "
                                   "text_a and text_b")
            a = instance.get("text_a", instance.get("text"))
            b = instance.get("text_b", "")
        else:
            a, b = instance, ""
        a = _text(a, where) if a is not None else None
        if a is None or not a.strip():
            raise RequestError(f"{where}: empty text")
        if b and not pair:
            raise RequestError(f"{where}: text_b: this model takes one text")
        text_a.append(a)
        text_b.append(_text(b, f"{where} text_b"))
    total = sum(map(len, text_a)) + sum(map(len, text_b))
    if total > MAX_TOTAL_CHARS:
        raise RequestError(f"{total} characters in one request, more than {MAX_TOTAL_CHARS}: "
                           "split it")
    return text_a, (text_b if pair else None)


def predict(model, info, text_a, text_b):
    """Call the SavedModel; -> the JSON-able predictions."""
    import tensorflow as tf

    if info["model"] == "tagger":
        out = {k: v.numpy() for k, v in
               model.signatures["entities"](text=tf.constant(text_a)).items()}
        predictions = []
        for row in range(len(text_a)):
            n = int(out["num_entities"][row])
            predictions.append({"entities": [
                {"type": out["entity_type"][row][k].decode(),
                 "text": out["entity_text"][row][k].decode(),
                 "start": int(out["entity_start"][row][k]), "end": int(out["entity_end"][row][k]),
                 "score": round(float(out["entity_score"][row][k]), 6)} for k in range(n)]})
        return predictions
    if text_b is None:
        out = model.signatures["text"](text_a=tf.constant(text_a))
    else:
        out = model.signatures["text_pair"](text_a=tf.constant(text_a),
                                            text_b=tf.constant(text_b))
    if info.get("regression"):
        return [{"score": float(s)} for s in out["score"].numpy()]
    names = info["labels"]
    return [{"label": label.decode(),
             "probabilities": {n: round(float(p), 6) for n, p in zip(names, row)}}
            for label, row in zip(out["label"].numpy(), out["probabilities"].numpy())]


def _reply(body, status):
    """An HTTP answer other than 200 from inside azmlinfsrv (AMLResponse exists only there)."""
    try:
        from azureml.contrib.services.aml_response import AMLResponse
    except ImportError:  # called outside the server (tests, a notebook)
        return {**body, "status": status}
    return AMLResponse(body, status, json_str=True)


def run(raw_data):
    """One request -> {"predictions": [...]}, or a 400 / 500 answer with {"error": ...}."""
    try:
        text_a, text_b = parse_request(raw_data, _info)
        return {"predictions": predict(_model, _info, text_a, text_b)}
    except RequestError as e:
        return _reply({"error": str(e)}, 400)
    except Exception:  # logged whole for the operator, never sent to the client
        logger.exception("scoring failed")
        return _reply({"error": "the model failed on this request (see the deployment's "
                                "logs)"}, 500)
