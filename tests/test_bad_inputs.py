"""Every script over a table of bad inputs: exit status 2, one line `script: error: ...` naming
the flag, file or line, no traceback, and nothing written (the output folder or file is not
created). Flags that absl itself rejects (unknown flag, a value of the wrong type, an enum value
not listed) follow the same rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared

TINY = ("checkpoints", "google-tf1-tiny-random")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small real inputs, and broken variants of them."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tiny = shared(*TINY)
    mrpc = root / "MRPC"
    mrpc.mkdir()
    lines = shared("glue", "MRPC", "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    (mrpc / "train.tsv").write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    (mrpc / "dev.tsv").write_text("\n".join(lines[:11]) + "\n", encoding="utf-8")
    header_only = root / "MRPC_header_only"
    header_only.mkdir()
    (header_only / "train.tsv").write_text(lines[0] + "\n", encoding="utf-8")
    (header_only / "dev.tsv").write_text(lines[0] + "\n", encoding="utf-8")
    bad_label = root / "MRPC_bad_label"
    bad_label.mkdir()
    row = lines[1].split("\t")
    row[0] = "7"
    (bad_label / "train.tsv").write_text(lines[0] + "\n" + "\t".join(row) + "\n",
                                         encoding="utf-8")
    (bad_label / "dev.tsv").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    conll = root / "conll"
    conll.mkdir()
    for name in ("eng.train", "eng.testa", "eng.testb"):
        (conll / name).write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORGG\n\n",
                                  encoding="utf-8")
    hf = root / "hf_truncated"
    shutil.copytree(shared("models", "all-MiniLM-L6-v2"), hf,
                    ignore=shutil.ignore_patterns("*.bin", "*.onnx", "*.h5", "onnx", "openvino"))
    data = (hf / "model.safetensors").read_bytes()
    (hf / "model.safetensors").write_bytes(data[: len(data) // 3])
    bad_json = root / "bad_config.json"
    bad_json.write_text('{"vocab_size": 15, "hidden_size": 4,', encoding="utf-8")
    not_dir = root / "a_file"
    not_dir.write_text("x", encoding="utf-8")
    text = root / "sentences.txt"
    text.write_text("jack works.\n", encoding="utf-8")
    empty_records = root / "empty.tfrecord"
    empty_records.write_bytes(b"")
    return {"root": root, "tiny": tiny, "ckpt": tiny / "bert_model.ckpt", "mrpc": mrpc,
            "header_only": header_only, "bad_label": bad_label, "conll": conll, "hf": hf,
            "bad_json": bad_json, "not_dir": not_dir, "text": text,
            "empty_records": empty_records, "vocab": tiny / "vocab.txt"}


def _classifier(i, out, *extra):
    return ["run_classifier.py", "--task=MRPC", f"--data_dir={i['mrpc']}",
            f"--init_checkpoint={i['ckpt']}", f"--output_dir={out}", "--max_seq_length=16",
            "--do_train", *extra]


# name -> (inputs, output path -> argv, what the one line must contain)
CASES = {
    "rc_no_output_dir": (lambda i, out: ["run_classifier.py", "--task=MRPC", "--do_train",
                                         f"--init_checkpoint={i['ckpt']}"], "--output_dir"),
    "rc_unknown_task": (lambda i, out: _classifier(i, out, "--task=MRCP"), "MRCP"),
    "rc_nothing_to_do": (lambda i, out: [a for a in _classifier(i, out) if a != "--do_train"],
                         "--do_train"),
    "rc_learning_rate_zero": (lambda i, out: _classifier(i, out, "--learning_rate=0"),
                              "--learning_rate"),
    "rc_log_steps_zero": (lambda i, out: _classifier(i, out, "--log_steps=0"), "--log_steps"),
    "rc_batch_zero": (lambda i, out: _classifier(i, out, "--train_batch_size=0"),
                      "batch"),
    "rc_warmup_above_one": (lambda i, out: _classifier(i, out, "--warmup_proportion=1.5"),
                            "--warmup_proportion"),
    "rc_epochs_zero": (lambda i, out: _classifier(i, out, "--num_train_epochs=0"),
                       "--num_train_epochs"),
    "rc_epochs_too_few_for_a_step": (
        lambda i, out: _classifier(i, out, "--num_train_epochs=0.001", "--train_batch_size=8"),
        "--num_train_epochs"),
    "rc_accumulation_zero": (lambda i, out: _classifier(i, out, "--num_accumulation_steps=0"),
                             "--num_accumulation_steps"),
    "rc_seq_longer_than_positions": (lambda i, out: _classifier(i, out, "--max_seq_length=64"),
                                     "max_position_embeddings"),
    "rc_missing_checkpoint": (lambda i, out: _classifier(i, out,
                                                         "--init_checkpoint=/no/such/ckpt"),
                              "--init_checkpoint"),
    "rc_missing_vocab": (lambda i, out: _classifier(i, out, "--vocab_file=/no/vocab.txt"),
                         "--vocab_file"),
    "rc_bad_config_json": (lambda i, out: _classifier(i, out,
                                                      f"--bert_config_file={i['bad_json']}"),
                           "bad_config.json"),
    "rc_data_dir_without_files": (lambda i, out: _classifier(i, out, f"--data_dir={i['root']}"),
                                  "train.tsv"),
    "rc_train_tsv_header_only": (lambda i, out: _classifier(i, out,
                                                            f"--data_dir={i['header_only']}"),
                                 "train.tsv"),
    "rc_label_not_in_task": (lambda i, out: _classifier(i, out, f"--data_dir={i['bad_label']}"),
                             "train.tsv"),
    "rc_truncated_safetensors": (lambda i, out: _classifier(i, out, f"--init_checkpoint={i['hf']}",
                                                            "--max_seq_length=128"),
                                 "model.safetensors"),
    "rc_output_dir_is_a_file": (lambda i, out: _classifier(i, i["not_dir"]), "a_file"),
    "rc_unknown_dtype": (lambda i, out: _classifier(i, out, "--dtype=fp64"), "--dtype"),
    "rc_not_a_number": (lambda i, out: _classifier(i, out, "--learning_rate=fast"),
                        "learning_rate"),
    "rc_unknown_flag": (lambda i, out: _classifier(i, out, "--learnin_rate=1e-4"),
                        "learnin_rate"),
    "rc_do_predict_without_test_file": (lambda i, out: _classifier(i, out, "--do_predict"),
                                        "test.tsv"),
    "rc_data_dir_is_a_file": (lambda i, out: _classifier(i, out,
                                                         f"--data_dir={i['mrpc']}/dev.tsv"),
                              "--data_dir"),
    "pt_text_file_as_records": (lambda i, out: ["run_pretraining.py", "--do_train",
                                                f"--input_file={i['text']}",
                                                f"--init_checkpoint={i['ckpt']}",
                                                f"--output_dir={out}", "--max_seq_length=16",
                                                "--max_predictions_per_seq=2"],
                                "create_pretraining_data.py"),
    "ner_bad_tag": (lambda i, out: ["run_ner.py", f"--data_dir={i['conll']}", "--do_train",
                                    f"--init_checkpoint={i['ckpt']}", f"--output_dir={out}",
                                    "--max_seq_length=16"], "B-ORGG"),
    "ner_data_dir_missing": (lambda i, out: ["run_ner.py", f"--data_dir={i['root']}/none",
                                             "--do_train", f"--init_checkpoint={i['ckpt']}",
                                             f"--output_dir={out}", "--max_seq_length=16"],
                             "eng.train"),
    "pt_no_input_files": (lambda i, out: ["run_pretraining.py", "--do_train",
                                          f"--input_file={i['root']}/none-*",
                                          f"--init_checkpoint={i['ckpt']}",
                                          f"--output_dir={out}", "--max_seq_length=16",
                                          "--max_predictions_per_seq=2"], "--input_file"),
    "pt_empty_record_file": (lambda i, out: ["run_pretraining.py", "--do_train",
                                             f"--input_file={i['empty_records']}",
                                             f"--init_checkpoint={i['ckpt']}",
                                             f"--output_dir={out}", "--max_seq_length=16",
                                             "--max_predictions_per_seq=2"], "empty.tfrecord"),
    "pt_global_batch_not_divisible": (lambda i, out: [
        "run_pretraining.py", "--do_train", f"--input_file={i['empty_records']}",
        f"--init_checkpoint={i['ckpt']}", f"--output_dir={out}", "--max_seq_length=16",
        "--max_predictions_per_seq=2", "--train_batch_size=8", "--global_batch_size=12"],
        "--global_batch_size"),
    "ef_missing_input": (lambda i, out: ["extract_features.py", f"--input_file={i['root']}/none",
                                         f"--output_file={out}",
                                         f"--init_checkpoint={i['ckpt']}"], "--input_file"),
    "ef_bad_layer": (lambda i, out: ["extract_features.py", f"--input_file={i['text']}",
                                     f"--output_file={out}", f"--init_checkpoint={i['ckpt']}",
                                     "--layers=-9", "--max_seq_length=16"], "-9"),
    "cpd_missing_vocab": (lambda i, out: ["create_pretraining_data.py",
                                          f"--input_file={i['text']}", f"--output_file={out}",
                                          "--vocab_file=/no/vocab.txt"], "--vocab_file"),
    "cpd_seq_too_short": (lambda i, out: ["create_pretraining_data.py",
                                          f"--input_file={i['text']}", f"--output_file={out}",
                                          f"--vocab_file={i['vocab']}", "--max_seq_length=3"],
                          "--max_seq_length"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clean_line(inputs, tmp_path, name):
    argv_of, expected = CASES[name]
    out = tmp_path / "out"
    argv = argv_of(inputs, out)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith(f"{argv[0]}: error: "), proc.stderr[-3000:]
    assert expected in lines[-1], lines[-1]
    assert not out.exists(), f"{out} was written"


def test_ctrl_c_is_one_line_with_where_to_resume(tmp_path, capsys, monkeypatch):
    """run_main turns Ctrl-C into exit 130 and one line; a run with checkpoints says how to
    resume (the engine resumes exactly from the last one)."""
    from absl import flags

    from bert_tf import cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["run_pretraining.py"])
    values = flags.FlagValues()
    flags.DEFINE_string("output_dir", str(tmp_path), "", flag_values=values)
    flags.DEFINE_bool("do_train", True, "", flag_values=values)
    values.mark_as_parsed()
    monkeypatch.setattr(flags, "FLAGS", values)
    with pytest.raises(SystemExit) as e:
        cli.run_main(interrupted, [], tensorflow=False)
    assert e.value.code == 130
    assert capsys.readouterr().err.strip() == "run_pretraining.py: interrupted"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-20.index").write_bytes(b"")
    with pytest.raises(SystemExit):
        cli.run_main(interrupted, [], tensorflow=False)
    assert capsys.readouterr().err.strip() == (
        f"run_pretraining.py: interrupted; the checkpoints so far are in {tmp_path}/checkpoints: "
        "run the same command to resume from the last one")
