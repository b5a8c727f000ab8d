"""GLUE downloads against a real HTTP server on 127.0.0.1 serving files built at test time from
../shared/data/glue: the RTE folder zipped as GLUE ships it, MRPC as SentEval's MSR paraphrase
files plus GLUE's dev-id list, AX as a diagnostic-format TSV. Only loopback is contacted."""

import functools
import http.server
import os
import pathlib
import stat
import subprocess
import sys
import threading
import zipfile

import pytest

from bert_tf.data import download
from bert_tf.data.download import DownloadError, download_glue
from bert_tf.data.glue import get_processor


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, requests, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self._requests.append(self.path)
        if self.path == "/truncated.zip":  # promises more bytes than it sends
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04 only the start")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(served folder, base URL, list of requested paths)."""
    root = tmp_path / "served"
    root.mkdir()
    requests = []
    handler = functools.partial(_Handler, directory=str(root), requests=requests)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    # Never send loopback requests through a proxy that may be configured for the registries.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("BERT_TF_GLUE_BASE_URL", raising=False)
    monkeypatch.delenv("BERT_TF_CACHE", raising=False)
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def zip_folder(folder, zip_path, arcdir):
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{arcdir}/", "")
        for name in sorted(os.listdir(folder)):
            archive.write(os.path.join(folder, name), f"{arcdir}/{name}")


def leftovers(cache):
    """What the cache's glue folder holds besides lock files."""
    glue_root = cache / "glue"
    return sorted(n for n in os.listdir(glue_root) if not n.endswith(".lock")) \
        if glue_root.exists() else []


def test_rte_zip(server, tmp_path, shared_data):
    root, base_url, requests = server
    rte = shared_data("glue", "RTE")
    zip_folder(rte, root / "RTE.zip", "RTE")
    cache = tmp_path / "cache"
    data_dir = download_glue("rte", cache_dir=str(cache), base_url=base_url, progress=False)
    assert data_dir == str(cache / "glue" / "RTE")
    assert requests == ["/RTE.zip"]
    p = get_processor("RTE")
    counts = tuple(len(p.get_examples(data_dir, s)) for s in ("train", "dev", "test"))
    assert counts == (2490, 277, 3000)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert (cache / "glue" / "RTE" / name).read_bytes() == (rte / name).read_bytes()
    assert leftovers(cache) == ["RTE"]  # no temporary folder or zip left behind
    # Cached: no second request, same answer.
    assert download_glue("RTE", cache_dir=str(cache), base_url=base_url) == data_dir
    assert requests == ["/RTE.zip"]


def test_cache_and_mirror_from_environment(server, tmp_path, shared_data, monkeypatch):
    root, base_url, requests = server
    zip_folder(shared_data("glue", "RTE"), root / "RTE.zip", "RTE")
    monkeypatch.setenv("BERT_TF_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("BERT_TF_GLUE_BASE_URL", base_url + "/")
    from bert_tf import downloads

    assert downloads.cache_dir() == tmp_path / "env-cache"
    data_dir = download.ensure_glue_data("RTE")
    assert data_dir == str(tmp_path / "env-cache" / "glue" / "RTE")
    assert requests == ["/RTE.zip"]
    # An explicit data_dir is used as given, without any request.
    assert download.ensure_glue_data("RTE", data_dir="/some/where") == "/some/where"
    assert requests == ["/RTE.zip"]


def test_mrpc_from_msr_files(server, tmp_path, shared_data):
    root, base_url, requests = server
    mrpc = shared_data("glue", "MRPC")

    def lines(name):
        return (mrpc / name).read_bytes().decode("utf-8").split("\n")

    train, dev = lines("train.tsv"), lines("dev.tsv")
    header, train_rows, dev_rows = train[0], [r for r in train[1:] if r], [r for r in dev[1:] if r]
    # SentEval's train file holds GLUE's train and dev pairs together: interleave them.
    merged, dev_left = [], list(dev_rows)
    for i, row in enumerate(train_rows):
        merged.append(row)
        if i % 9 == 4 and dev_left:
            merged.append(dev_left.pop(0))
    merged += dev_left
    (root / "msr_paraphrase_train.txt").write_bytes(
        ("\r\n".join([header] + merged) + "\r\n").encode("utf-8"))  # Windows line ends, as MSR's
    (root / "mrpc_dev_ids.tsv").write_text(
        "".join("\t".join(r.split("\t")[1:3]) + "\n" for r in dev_rows), encoding="utf-8")
    (root / "msr_paraphrase_test.txt").write_bytes((mrpc / "msr_paraphrase_test.txt").read_bytes())

    cache = tmp_path / "cache"
    data_dir = download_glue("MRPC", cache_dir=str(cache), base_url=base_url, progress=False)
    assert sorted(requests) == ["/mrpc_dev_ids.tsv", "/msr_paraphrase_test.txt",
                                "/msr_paraphrase_train.txt"]
    p = get_processor("MRPC")
    assert len(p.get_train_examples(data_dir)) == 3668
    assert len(p.get_dev_examples(data_dir)) == 408
    assert len(p.get_test_examples(data_dir)) == 1725
    # Built exactly in GLUE's layout: byte for byte the files GLUE distributes.
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        assert (cache / "glue" / "MRPC" / name).read_bytes() == (mrpc / name).read_bytes(), name
    assert download_glue("MRPC", cache_dir=str(cache), base_url=base_url) == data_dir
    assert len(requests) == 3


def test_ax_tsv(server, tmp_path, shared_data):
    root, base_url, requests = server
    # RTE's test file has AX's columns (index, sentence1, sentence2).
    (root / "AX.tsv").write_bytes(shared_data("glue", "RTE", "test.tsv").read_bytes())
    data_dir = download_glue("diagnostic", cache_dir=str(tmp_path / "c"), base_url=base_url,
                             progress=False)
    assert requests == ["/AX.tsv"]
    assert len(get_processor("AX").get_test_examples(data_dir)) == 3000


def test_missing_file_names_url_and_data_dir(server, tmp_path):
    root, base_url, requests = server
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download_glue("CoLA", cache_dir=str(cache), base_url=base_url, progress=False)
    message = str(info.value)
    assert f"{base_url}/CoLA.zip" in message and "404" in message and "--data_dir" in message
    assert "\n" not in message and "BERT_TF_GLUE_BASE_URL" in message
    assert leftovers(cache) == []
    # MRPC's second file is missing: no half-built MRPC folder either.
    (root / "msr_paraphrase_train.txt").write_text("Quality\n", encoding="utf-8")
    with pytest.raises(DownloadError, match="msr_paraphrase_test.txt"):
        download_glue("MRPC", cache_dir=str(cache), base_url=base_url, progress=False)
    assert leftovers(cache) == []


def test_unreachable_server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/RTE.zip.*--data_dir") as info:
        download_glue("RTE", cache_dir=str(tmp_path), base_url=f"http://127.0.0.1:{port}",
                      progress=False)
    assert "\n" not in str(info.value) and "network" in str(info.value)
    assert leftovers(tmp_path) == []


def test_truncated_download(server, tmp_path, monkeypatch, shared_data):
    """The server closes the connection mid-file: nothing is kept, and a rerun completes."""
    root, base_url, requests = server
    monkeypatch.setattr(download, "_ZIPS", dict(download._ZIPS, RTE="truncated.zip"))
    with pytest.raises(DownloadError, match=r"truncated.zip: .*IncompleteRead.*--data_dir"):
        download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url, progress=False)
    assert leftovers(tmp_path / "c") == []
    monkeypatch.setattr(download, "_ZIPS", dict(download._ZIPS, RTE="RTE.zip"))
    zip_folder(shared_data("glue", "RTE"), root / "RTE.zip", "RTE")
    data_dir = download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url,
                             progress=False)
    assert len(get_processor("RTE").get_dev_examples(data_dir)) == 277
    assert leftovers(tmp_path / "c") == ["RTE"]


def evil_zip(path, kind):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n")
        if kind == "dotdot":
            archive.writestr("RTE/../../escaped.txt", "gotcha")
        elif kind == "absolute":
            archive.writestr("/tmp/escaped.txt", "gotcha")
        elif kind == "symlink":
            info = zipfile.ZipInfo("RTE/dev.tsv")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")


@pytest.mark.parametrize("kind,problem", [("dotdot", "'..'"), ("absolute", "absolute path"),
                                          ("symlink", "symbolic link")])
def test_unsafe_zip_rejected(server, tmp_path, kind, problem):
    root, base_url, requests = server
    evil_zip(root / "RTE.zip", kind)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(DownloadError) as info:
        download_glue("RTE", cache_dir=str(cache), base_url=base_url, progress=False)
    assert problem in str(info.value) and f"{base_url}/RTE.zip" in str(info.value)
    assert leftovers(cache) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_zip_without_task_files(server, tmp_path):
    root, base_url, requests = server
    with zipfile.ZipFile(root / "RTE.zip", "w") as archive:
        archive.writestr("RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DownloadError, match=r"does not hold GLUE's RTE files .*dev.tsv"):
        download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url, progress=False)
    (root / "RTE.zip").write_bytes(b"<html>not a zip</html>")
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url, progress=False)
    assert leftovers(tmp_path / "c") == []


def test_unknown_task_makes_no_request(server, tmp_path):
    root, base_url, requests = server
    with pytest.raises(ValueError, match="unknown task 'glue'"):
        download_glue("glue", cache_dir=str(tmp_path), base_url=base_url)
    assert requests == []


def test_run_classifier_failed_download_is_one_line(server, tmp_path, shared_data):
    """Without --data_dir and with the GLUE mirror answering 404, run_classifier.py ends in one
    line `run_classifier.py: error: ...` naming the URL and --data_dir, with exit status 2."""
    root, base_url, requests = server
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2",
               BERT_TF_GLUE_BASE_URL=base_url, BERT_TF_CACHE=str(tmp_path / "cache"),
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    proc = subprocess.run(
        [sys.executable, str(repo / "run_classifier.py"), "--task=RTE", "--do_train",
         f"--output_dir={tmp_path / 'out'}", "--max_seq_length=16",
         f"--init_checkpoint={shared_data('checkpoints', 'google-tf1-tiny-random')}"],
        env=env, capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert last.startswith("run_classifier.py: error: could not download "
                           f"{base_url}/RTE.zip: the server answered HTTP 404"), last
    assert "--data_dir" in last and "BERT_TF_GLUE_BASE_URL" in last
    assert requests == ["/RTE.zip"]
    assert leftovers(tmp_path / "cache") == [] and not (tmp_path / "out").exists()


# -- SQuAD ------------------------------------------------------------------------------------------

def test_squad_official_file_is_downloaded_once_and_checked(server, tmp_path):
    """An official name that is not here is fetched from the mirror into the cache, checked
    against its SHA-256, and found there the next time without a request; a file whose bytes
    are not the official ones is refused and nothing is left under its name."""
    import shutil

    from tests.conftest import shared

    root, url, requests = server
    shutil.copy(shared("squad", "dev-v1.1.json"), root / "dev-v1.1.json")
    cache = tmp_path / "cache"
    path = download.ensure_squad_file("data/dev-v1.1.json", "predict_file", cache_dir=str(cache),
                                      base_url=url, progress=False)
    assert pathlib.Path(path).read_bytes() == shared("squad", "dev-v1.1.json").read_bytes()
    assert requests == ["/dev-v1.1.json"]
    assert download.ensure_squad_file("dev-v1.1.json", cache_dir=str(cache), base_url=url,
                                      progress=False) == path
    assert requests == ["/dev-v1.1.json"]

    (root / "train-v1.1.json").write_text('{"data": []}')  # not the official bytes
    with pytest.raises(DownloadError, match="SHA-256") as e:
        download.ensure_squad_file("train-v1.1.json", cache_dir=str(cache), base_url=url,
                                   progress=False)
    assert "--train_file" in str(e.value)
    assert not list((cache / "squad").glob("train-v1.1*/train-v1.1.json"))

    with pytest.raises(FileNotFoundError, match="--train_file=mine.json: no such file"):
        download.ensure_squad_file("mine.json", cache_dir=str(cache))
    local = shared("squad", "dev-v1.1.json")
    assert download.ensure_squad_file(str(local)) == str(local)  # a path that exists: as is
