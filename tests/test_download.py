"""GLUE downloads against a real HTTP server on 127.0.0.1 serving files built at test time from
../shared/data/glue: the RTE folder zipped as GLUE ships it, MRPC as SentEval's MSR paraphrase
files plus GLUE's dev-id list, AX as a diagnostic-format TSV. Only loopback is contacted."""

import functools
import http.server
import os
import stat
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
    glue_root = cache / "glue"
    return sorted(os.listdir(glue_root)) if glue_root.exists() else []


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
    assert download.default_cache_dir() == str(tmp_path / "env-cache")
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
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/RTE.zip.*--data_dir"):
        download_glue("RTE", cache_dir=str(tmp_path), base_url=f"http://127.0.0.1:{port}",
                      progress=False)


def test_truncated_download(server, tmp_path, monkeypatch):
    root, base_url, requests = server
    monkeypatch.setattr(download, "_ZIPS", dict(download._ZIPS, RTE="truncated.zip"))
    with pytest.raises(DownloadError, match=r"truncated.zip is truncated: got \d+ of 1000 bytes"):
        download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url, progress=False)
    assert leftovers(tmp_path / "c") == []


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
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_glue("RTE", cache_dir=str(tmp_path / "c"), base_url=base_url, progress=False)
    assert leftovers(tmp_path / "c") == []


def test_unknown_task_makes_no_request(server, tmp_path):
    root, base_url, requests = server
    with pytest.raises(ValueError, match="unknown task 'glue'"):
        download_glue("glue", cache_dir=str(tmp_path), base_url=base_url)
    assert requests == []
