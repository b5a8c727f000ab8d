"""bert_tf.checkpoints.presets against a real HTTP server on 127.0.0.1.

Archives are built at test time from the real Google-layout checkpoint in
../shared/data/checkpoints/google-tf1-tiny-random and served by http.server in a thread;
only loopback is used.
"""

import _thread
import dataclasses
import http.server
import io
import multiprocessing
import os
import pathlib
import signal
import socket
import stat
import tarfile
import threading
import time
import zipfile

import pytest

from bert_tf import downloads
from bert_tf.checkpoints import presets
from bert_tf.checkpoints.presets import (GOOGLE_BASE_URL, PRESETS, ArchiveError, DownloadError,
                                         UnsafeArchiveError, preset_url, resolve)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("BERT_TF_SHARED_DATA") or REPO.parent / "shared" / "data")
CKPT = SHARED_DATA / "checkpoints" / "google-tf1-tiny-random"
FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index",
         "bert_model.ckpt.data-00000-of-00001")
TINY_PATH = "2020_02_20/uncased_L-2_H-128_A-2.zip"  # bert-tiny's path below the Google base
TOP = "uncased_L-2_H-128_A-2"


@pytest.fixture(scope="module")
def originals():
    if not CKPT.is_dir():
        pytest.skip(f"real data not available: {CKPT} (set BERT_TF_SHARED_DATA to the folder "
                    "holding the shared data sets)")
    return {name: (CKPT / name).read_bytes() for name in FILES}


# ----------------------------------------------------------------------------- archives


def make_zip(files, top=None, extra=()):
    """Zip bytes: `files` (name -> bytes) under folder `top` (or at top level), then `extra`
    (ZipInfo, bytes) members written verbatim."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if top:
            zf.writestr(top + "/", b"")
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def make_tar_gz(files, top=None, extra=()):
    """tar.gz bytes, in the `./folder/file` style of GNU tar, then `extra` TarInfo members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        if top:
            info = tarfile.TarInfo(f"./{top}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{top}/{name}" if top else f"./{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def tar_member(name, type_, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    return info


# ----------------------------------------------------------------------------- server


class Server:
    """http.server on 127.0.0.1 serving `routes` (path -> bytes or dict), counting requests."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if isinstance(route, bytes):
                    route = {"body": route}
                body = route["body"]
                time.sleep(route.get("delay", 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                # A Content-Length larger than the body simulates a cut connection.
                self.send_header("Content-Length", str(route.get("length", len(body))))
                self.end_headers()
                if route.get("interrupt"):  # Ctrl-C in the client half-way through the body
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    _thread.interrupt_main()
                    time.sleep(0.5)
                    body = body[len(body) // 2:]
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve_preset(self, name, body, **route):
        """Serve `body` where preset `name` lives under the mirror base `self.mirror`."""
        path = "/mirror/" + PRESETS[name].url[len(GOOGLE_BASE_URL):]
        self.routes[path] = dict(body=body, **route)
        return self.base + path

    @property
    def mirror(self):
        return self.base + "/mirror/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    # Loopback only: never route test requests through a proxy from the environment.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", presets.BASE_URL_ENV, presets.CACHE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def cache_entries(cache):
    """What the cache holds besides lock files."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def assert_same_files(directory, originals):
    assert sorted(os.listdir(directory)) == sorted(FILES)
    for name, data in originals.items():
        assert pathlib.Path(directory, name).read_bytes() == data, name


# ----------------------------------------------------------------------------- the table


def test_preset_table():
    expected = {
        "bert-base-uncased": ("2018_10_18/uncased_L-12_H-768_A-12.zip", True),
        "bert-large-uncased": ("2018_10_18/uncased_L-24_H-1024_A-16.zip", True),
        "bert-base-cased": ("2018_10_18/cased_L-12_H-768_A-12.zip", False),
        "bert-large-cased": ("2018_10_18/cased_L-24_H-1024_A-16.zip", False),
        "bert-tiny": ("2020_02_20/uncased_L-2_H-128_A-2.zip", True),
        "bert-mini": ("2020_02_20/uncased_L-4_H-256_A-4.zip", True),
        "bert-small": ("2020_02_20/uncased_L-4_H-512_A-8.zip", True),
        "bert-medium": ("2020_02_20/uncased_L-8_H-512_A-8.zip", True),
    }
    assert sorted(PRESETS) == sorted(expected)
    for name, (path, lower) in expected.items():
        assert PRESETS[name].url == "https://storage.googleapis.com/bert_models/" + path
        assert PRESETS[name].do_lower_case is lower
        assert PRESETS[name].description


def test_preset_url_base_override(monkeypatch):
    assert preset_url("bert-tiny") == GOOGLE_BASE_URL + TINY_PATH
    assert preset_url("bert-tiny", "http://m.example/b") == "http://m.example/b/" + TINY_PATH
    monkeypatch.setenv(presets.BASE_URL_ENV, "file:///srv/bert_models/")
    assert preset_url("bert-tiny") == "file:///srv/bert_models/" + TINY_PATH


# ----------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("layout", ["zip-with-folder", "zip-flat", "tar.gz-with-folder"])
def test_resolve_downloads_extracts_once(layout, server, cache, monkeypatch, originals):
    if layout.startswith("tar"):
        # A tar.gz preset; the archive type is recognised by content.
        monkeypatch.setitem(PRESETS, "bert-tiny", dataclasses.replace(
            PRESETS["bert-tiny"], url=GOOGLE_BASE_URL + "2020_02_20/tiny.tar.gz"))
        body = make_tar_gz(originals, top=TOP)
    else:
        body = make_zip(originals, top=TOP if layout == "zip-with-folder" else None)
    url = server.serve_preset("bert-tiny", body)

    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)

    expected = cache / "bert-tiny" / TOP if layout.endswith("with-folder") else cache / "bert-tiny"
    assert got == str(expected)
    assert_same_files(got, originals)
    assert server.requests == [url[len(server.base):]]
    assert cache_entries(cache) == ["bert-tiny"]  # no archive, no temporaries left

    # Second call: straight from the cache, no request (even with the server gone).
    server.close()
    assert resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror) == got
    assert len(server.requests) == 1


def test_env_vars_pick_mirror_and_cache(server, tmp_path, monkeypatch, originals, capsys):
    server.serve_preset("bert-mini", make_zip(originals, top="uncased_L-4_H-256_A-4"))
    monkeypatch.setenv(presets.BASE_URL_ENV, server.mirror)
    monkeypatch.setenv(presets.CACHE_ENV, str(tmp_path / "envcache"))

    got = resolve("bert-mini")  # progress bar on by default

    assert got == str(tmp_path / "envcache" / "bert-mini" / "uncased_L-4_H-256_A-4")
    assert_same_files(got, originals)
    assert "100%" in capsys.readouterr().err  # pooch's tqdm bar writes to stderr


def _resolve_in_child(cache, mirror, results):
    try:
        results.put(resolve("bert-tiny", cache_dir=cache, progress=False, base_url=mirror))
    except Exception as e:  # pragma: no cover - reported by the parent
        results.put(repr(e))


def test_file_url_mirror(tmp_path, cache, originals):
    """A mirror on a shared file system: file:// URLs are copied, with the same checks."""
    mirror = tmp_path / "mirror"
    (mirror / "2020_02_20").mkdir(parents=True)
    (mirror / TINY_PATH).write_bytes(make_zip(originals, top=TOP))
    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=mirror.as_uri())
    assert_same_files(got, originals)
    with pytest.raises(DownloadError, match="No such file.*--init_checkpoint") as e:
        resolve("bert-mini", cache_dir=cache, progress=False, base_url=mirror.as_uri())
    assert "\n" not in str(e.value)
    assert cache_entries(cache) == ["bert-tiny"]


def test_concurrent_processes_download_once(server, cache, originals):
    """Two processes (say, Horovod ranks) resolve one preset into one cache at the same time: the
    lock beside the preset lets one download while the other waits and then reads the cache."""
    server.serve_preset("bert-tiny", make_zip(originals), delay=1.0)
    fork = multiprocessing.get_context("fork")  # the children inherit the imported modules
    results = fork.Queue()
    children = [fork.Process(target=_resolve_in_child, args=(cache, server.mirror, results))
                for _ in range(2)]
    for child in children:
        child.start()
    got = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert got == [str(cache / "bert-tiny")] * 2
    assert len(server.requests) == 1
    assert_same_files(got[0], originals)
    assert cache_entries(cache) == ["bert-tiny"]


def test_broken_cache_entry_is_fetched_again(server, cache, originals):
    server.serve_preset("bert-tiny", make_zip(originals))
    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    os.remove(os.path.join(got, "vocab.txt"))  # e.g. a user pruning files by hand

    assert resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror) == got
    assert len(server.requests) == 2
    assert_same_files(got, originals)


def test_known_sha256_is_checked(server, cache, monkeypatch, originals):
    import hashlib

    body = make_zip(originals)
    url = server.serve_preset("bert-tiny", body)
    tiny = PRESETS["bert-tiny"]

    monkeypatch.setitem(PRESETS, "bert-tiny", dataclasses.replace(tiny, sha256="0" * 64))
    with pytest.raises(DownloadError, match="SHA-256") as e:
        resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert url in str(e.value)
    assert cache_entries(cache) == []

    monkeypatch.setitem(PRESETS, "bert-tiny", dataclasses.replace(
        tiny, sha256=hashlib.sha256(body).hexdigest()))
    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert_same_files(got, originals)


# ----------------------------------------------------------------------------- failures


def test_truncated_download_raises_and_caches_nothing(server, cache, originals):
    body = make_zip(originals)
    url = server.serve_preset("bert-tiny", body, length=len(body) + 1000)

    with pytest.raises(DownloadError) as e:
        resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert url in str(e.value)
    assert f"IncompleteRead({len(body)} bytes read, 1000 more expected)" in str(e.value)
    assert cache_entries(cache) == []

    # Once the server behaves, the next call downloads again and succeeds.
    server.serve_preset("bert-tiny", body)
    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert_same_files(got, originals)
    assert len(server.requests) == 2


def test_interrupted_download_leaves_nothing(server, cache, originals):
    """Ctrl-C half-way through the body: nothing is left in the cache, and a rerun completes."""
    # Python's own Ctrl-C handler, whatever this process inherited: a shell that starts pytest
    # in the background (`make test &`) passes SIGINT ignored, and then the simulated Ctrl-C
    # (_thread.interrupt_main) does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupted_download_leaves_nothing(server, cache, originals)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted_download_leaves_nothing(server, cache, originals):
    body = make_zip(originals)
    server.serve_preset("bert-tiny", body, interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
        time.sleep(5)  # pragma: no cover - the interrupt lands while the body streams
    assert cache_entries(cache) == []
    server.serve_preset("bert-tiny", body)
    got = resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert_same_files(got, originals)
    assert len(server.requests) == 2


def test_http_404_names_the_url(server, cache):
    with pytest.raises(DownloadError) as e:
        resolve("bert-medium", cache_dir=cache, progress=False, base_url=server.mirror)
    msg = str(e.value)
    assert server.mirror + "2020_02_20/uncased_L-8_H-512_A-8.zip" in msg
    assert "404" in msg and "--init_checkpoint" in msg and presets.BASE_URL_ENV in msg
    assert "\n" not in msg
    assert cache_entries(cache) == []


def test_no_server_names_the_url(cache):
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/bert_models/"
    with pytest.raises(DownloadError) as e:
        resolve("bert-small", cache_dir=cache, progress=False, base_url=base, timeout=5)
    assert base + "2020_02_20/uncased_L-4_H-512_A-8.zip" in str(e.value)
    assert "network" in str(e.value) and "\n" not in str(e.value)
    assert cache_entries(cache) == []


def test_archive_without_checkpoint_is_rejected(server, cache, originals):
    url = server.serve_preset("bert-tiny", make_zip({"vocab.txt": originals["vocab.txt"]}))
    with pytest.raises(ArchiveError, match="bert_config.json") as e:
        resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert url in str(e.value)
    assert cache_entries(cache) == []


def _zip_symlink():
    info = zipfile.ZipInfo(f"{TOP}/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


MALICIOUS = {
    "zip-dotdot": lambda tmp, files: make_zip(files, TOP, [(zipfile.ZipInfo("../evil.txt"), b"x")]),
    "zip-dotdot-deep": lambda tmp, files: make_zip(
        files, TOP, [(zipfile.ZipInfo(f"{TOP}/../../../evil.txt"), b"x")]),
    "zip-absolute": lambda tmp, files: make_zip(
        files, TOP, [(zipfile.ZipInfo(str(tmp / "abs_evil.txt")), b"x")]),
    "zip-symlink": lambda tmp, files: make_zip(files, TOP, [(_zip_symlink(), b"/etc/passwd")]),
    "tar-symlink": lambda tmp, files: make_tar_gz(
        files, TOP, [tar_member(f"./{TOP}/evil_link", tarfile.SYMTYPE, str(tmp))]),
    "tar-hardlink": lambda tmp, files: make_tar_gz(
        files, TOP, [tar_member(f"./{TOP}/evil_hard", tarfile.LNKTYPE, "/etc/passwd")]),
    "tar-dotdot": lambda tmp, files: make_tar_gz(
        files, TOP, [tar_member("../evil.txt", tarfile.REGTYPE)]),
    "tar-absolute": lambda tmp, files: make_tar_gz(
        files, TOP, [tar_member(str(tmp / "abs_evil.txt"), tarfile.REGTYPE)]),
    "tar-device": lambda tmp, files: make_tar_gz(
        files, TOP, [tar_member(f"./{TOP}/evil_dev", tarfile.CHRTYPE)]),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_archive_is_rejected(kind, server, tmp_path, cache, monkeypatch, originals):
    if kind.startswith("tar"):
        monkeypatch.setitem(PRESETS, "bert-tiny", dataclasses.replace(
            PRESETS["bert-tiny"], url=GOOGLE_BASE_URL + "2020_02_20/tiny.tar.gz"))
    # The bad member comes after the good files, so a streaming extractor has already
    # written those when it meets it.
    url = server.serve_preset("bert-tiny", MALICIOUS[kind](tmp_path, originals))

    with pytest.raises(UnsafeArchiveError) as e:
        resolve("bert-tiny", cache_dir=cache, progress=False, base_url=server.mirror)
    assert url in str(e.value)
    assert list(tmp_path.rglob("*evil*")) == []
    assert [p for p in tmp_path.rglob("*") if p.is_symlink()] == []
    assert cache_entries(cache) == []  # no result, no archive, no temporaries


def test_extract_checks_zips_before_writing(tmp_path, originals):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(make_zip(originals, TOP, [(zipfile.ZipInfo("../evil.txt"), b"x")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(downloads.UnsafeArchiveError, match=r"\.\."):
        downloads.extract(archive, dest)
    assert list(dest.iterdir()) == []  # zips are checked in full before the first write


# ----------------------------------------------------------------------------- names, paths


def test_unknown_name_lists_presets(cache):
    with pytest.raises(ValueError) as e:
        resolve("bert-huge", cache_dir=cache)
    msg = str(e.value)
    assert "bert-huge" in msg and "path" in msg
    for name in PRESETS:
        assert name in msg
    assert not cache.exists()


def test_existing_path_is_returned_unchanged(cache, originals):
    for path in (str(CKPT), str(CKPT / "bert_config.json"),
                 str(CKPT / "bert_model.ckpt")):  # a TF checkpoint prefix (its .index exists)
        assert resolve(path, cache_dir=cache) == path
    assert resolve(CKPT, cache_dir=cache) == str(CKPT)  # os.PathLike -> str
    assert not cache.exists()
