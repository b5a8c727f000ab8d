"""extract_features.py end to end on the real pretrained checkpoint, checked against transformers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared

SCRIPT = str(REPO / "extract_features.py")


def run_script(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def minilm():
    return shared("models", "all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def mrpc_pairs():
    lines = shared("glue", "MRPC", "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:6]
    return [tuple(line.split("\t")[3:5]) for line in lines]


def test_features_match_transformers_hidden_states(tmp_path, minilm, mrpc_pairs):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    input_file = tmp_path / "in.txt"
    lines = [f"{a} ||| {b}" for a, b in mrpc_pairs[:3]] + [mrpc_pairs[3][0]]
    input_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run_script(f"--input_file={input_file}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}", "--layers=-1,-3", "--max_seq_length=40",
                      "--batch_size=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["linex_index"] for r in rows] == [0, 1, 2, 3]
    assert not (tmp_path / "out.jsonl.partial").exists()

    tok = transformers.BertTokenizer(str(minilm / "vocab.txt"), do_lower_case=True)
    model = transformers.BertModel.from_pretrained(str(minilm)).eval()
    for row, (a, b) in zip(rows, mrpc_pairs[:3] + [(mrpc_pairs[3][0], None)]):
        enc = tok(a, b, truncation="longest_first", max_length=40, return_tensors="pt")
        tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
        assert [f["token"] for f in row["features"]] == tokens
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        for k, layer in enumerate((-1, -3)):
            ours = np.array([f["layers"][k]["values"] for f in row["features"]])
            assert row["features"][0]["layers"][k]["index"] == layer
            assert np.abs(ours - hidden[layer][0].numpy()).max() <= 1e-4


@pytest.mark.slow  # 27 s of subprocesses; the default run stays under 15 min
def test_bad_inputs_exit_with_clear_errors(tmp_path, minilm):
    good = tmp_path / "in.txt"
    good.write_text("hello world\n")
    existing = tmp_path / "exists.jsonl"
    existing.write_text("keep me\n")

    proc = run_script(f"--input_file={good}", f"--output_file={existing}",
                      f"--init_checkpoint={minilm}")
    assert proc.returncode == 2 and "--overwrite_output" in proc.stderr
    assert existing.read_text() == "keep me\n"  # nothing already written is lost

    out = str(tmp_path / "o.jsonl")
    proc = run_script(f"--input_file={good}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}", "--max_seq_length=600")
    assert proc.returncode == 2 and "exceeds max_position_embeddings 512" in proc.stderr

    small_vocab = tmp_path / "vocab.txt"
    small_vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    proc = run_script(f"--input_file={good}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}", f"--vocab_file={small_vocab}")
    assert proc.returncode == 2 and "has 5 entries" in proc.stderr and "30522" in proc.stderr

    proc = run_script(f"--input_file={good}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}", "--layers=-7")
    assert proc.returncode == 2 and "layer -7 does not exist" in proc.stderr

    bad_config = tmp_path / "bert_config.json"
    bad_config.write_text('{"vocab_size": 30522, "hidden_size": 384, "num_attention_heads": 12,'
                          ' "num_hidden_layers": 4, "intermediate_size": 1536}')
    proc = run_script(f"--input_file={good}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}", f"--bert_config_file={bad_config}")
    assert proc.returncode == 2 and "layer.4" in proc.stderr  # unused encoder weights named

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9\n".encode("latin-1"))
    proc = run_script(f"--input_file={latin1}", f"--output_file={out}",
                      f"--init_checkpoint={minilm}")
    assert proc.returncode == 2 and "latin1.txt: not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(out)
