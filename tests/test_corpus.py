"""prepare_corpus.py / bert_tf.data.corpus: raw corpora (a real Wikipedia dump fragment, the
Python documentation as paragraphs, JSONL, Parquet) -> one sentence a line."""

import bz2
import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def prepare(inputs, output, workers=1, shards=None, **options):
    from bert_tf.data.corpus import CorpusOptions, prepare_corpus

    return prepare_corpus(",".join(map(str, inputs)), str(output), CorpusOptions(**options),
                          num_output_shards=shards, num_workers=workers, show_progress=False)


def documents(path):
    text = open(path, encoding="utf-8").read()
    return [d.split("\n") for d in text.strip("\n").split("\n\n")] if text.strip() else []


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "prepare_corpus.py"), "--noprogress",
                           *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def wiki_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("wiki") / "wiki.txt"
    summary = prepare([shared("corpus", WIKI)], out)
    return out, summary


def raw_pages():
    from bert_tf.data.mediawiki import read_dump

    return list(read_dump(str(shared("corpus", WIKI)), {}))


def test_wikipedia_dump_gives_the_articles_prose_and_no_markup(wiki_output):
    out, summary = wiki_output
    pages = raw_pages()
    articles = [p for p in pages if p.namespace == 0 and p.redirect is None]
    assert len(pages) == 206 and len(articles) == 106
    assert summary["dropped"]["redirects"] == 100
    # Every article with prose is kept (the data README: WikiExtractor gives 105 non-empty
    # documents; stubs below 2 sentences / 20 words go).
    assert 100 <= summary["documents"] <= 106
    assert summary["documents"] + summary["dropped"].get("too_short", 0) + \
        summary["dropped"].get("empty", 0) == 106
    assert 15_000 < summary["sentences"] < 20_000
    lines = [line for doc in documents(out) for line in doc]
    assert len(lines) == summary["sentences"]
    text = "\n".join(lines)
    for sentence in ("Albedo depends on the frequency of the radiation.",
                     "Anarchism is a political philosophy that advocates self-governed societies "
                     "based on voluntary institutions."):
        assert sentence in lines
    # No heading: the titles of every section heading in the dump, none a line of the output.
    headings = {m.group(2).strip().replace("'''", "").replace("''", "")
                for p in articles for m in re.finditer(r"(?m)^(=+)\s*(.+?)\s*\1\s*$", p.text)}
    assert len(headings) > 1000
    assert not headings & set(lines)
    assert summary["markup_removed"]["headings"] >= 2000
    # No template, link, table row, reference, entity, magic word or WikiExtractor placeholder.
    leftovers = re.compile(r"\{\{|\}\}|\[\[|\]\]|^\s*[|!]|\{\||\|\}|\|\||<ref|</|formula_\d|"
                           r"codice_\d|&[a-z]+;|__[A-Z]+__|\ue000|\ue001|\ue002|\ue003", re.M)
    assert leftovers.findall(text) == []
    # Table cells of the Albedo article (`| Fresh asphalt || 0.04`) are gone.
    assert not any("Fresh asphalt" in line for line in lines)
    assert summary["markup_removed"]["tables"] > 50
    assert summary["sentences_dropped"]["formula_or_code"] > 10
    # Each document is one article: Albedo's first sentence opens a document.
    starts = [doc[0] for doc in documents(out)]
    assert any(s.startswith("Albedo or reflection coefficient") for s in starts)


def test_table_heavy_articles_leave_no_table_rows(tmp_path):
    summary = prepare([shared("corpus", "enwiki-table-markup.xml.bz2")], tmp_path / "t.txt")
    assert summary["documents"] == 5 and summary["markup_removed"]["tables"] >= 10
    lines = [line for doc in documents(tmp_path / "t.txt") for line in doc]
    assert not [line for line in lines if re.search(r"^\s*[|!]|\|\||\{\||style=|colspan", line)]
    assert any("Estonia" in line for line in lines)


def test_python_docs_paragraphs_split_like_the_sentence_version(tmp_path):
    summary = prepare([shared("corpus", "python_docs_raw_train.txt")], tmp_path / "py.txt",
                      min_sentences=0, min_document_words=0, dedup=False)
    ours = documents(tmp_path / "py.txt")
    reference = documents(shared("corpus", "python_docs_train.txt"))
    assert len(ours) == len(reference) == summary["documents"] == 1025
    # Sentence lines agree on 99.5% of the reference lines (multiset match): both use blingfire;
    # the rest differ where the sentence version was split before a paragraph was rejoined.
    from collections import Counter

    pool = Counter(line for doc in ours for line in doc)
    hits = 0
    for line in (line for doc in reference for line in doc):
        if pool[line]:
            pool[line] -= 1
            hits += 1
    total = sum(len(doc) for doc in reference)
    assert hits / total > 0.99


def test_output_does_not_depend_on_workers_and_shards_round_robin(tmp_path):
    source = shared("corpus", "python_docs_raw_train.txt")
    one = prepare([source], tmp_path / "a" / "w.txt", workers=1, shards=3)
    two = prepare([source], tmp_path / "b" / "w.txt", workers=2, shards=3)
    for a, b in zip(one["shards"], two["shards"]):
        assert open(a["file"], "rb").read() == open(b["file"], "rb").read()
    n = one["documents"]
    assert n > 900 and [s["documents"] for s in one["shards"]] == \
        [len(range(k, n, 3)) for k in range(3)]
    assert os.path.exists(tmp_path / "a" / "w.txt.summary.json")
    assert not list((tmp_path / "a").glob("*.partial"))


def _python_docs_records(limit=200):
    return [" \n".join(doc) for doc in documents(shared("corpus", "python_docs_raw_train.txt"))
            ][:limit]


def test_jsonl_and_parquet_read_the_named_field_like_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _python_docs_records()
    with open(tmp_path / "docs.txt", "w", encoding="utf-8") as f:
        f.write("\n\n".join(r.replace(" \n", "\n") for r in records) + "\n")
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, r in enumerate(records):
            f.write(json.dumps({"id": i, "content": r}) + "\n")
    # The layout of a Hugging Face dataset saved with to_parquet: one string column per field.
    pq.write_table(pa.table({"id": list(range(len(records))), "content": records}),
                   tmp_path / "docs.parquet", row_group_size=64)
    text = prepare([tmp_path / "docs.txt"], tmp_path / "o1.txt")
    jsonl = prepare([tmp_path / "docs.jsonl.gz"], tmp_path / "o2.txt", text_field="content")
    parquet = prepare([tmp_path / "docs.parquet"], tmp_path / "o3.txt", text_field="content")
    assert [i["format"] for s in (text, jsonl, parquet) for i in s["inputs"]] == \
        ["text", "jsonl", "parquet"]
    expected = open(tmp_path / "o1.txt", "rb").read()
    assert len(expected) > 100_000
    assert open(tmp_path / "o2.txt", "rb").read() == expected
    assert open(tmp_path / "o3.txt", "rb").read() == expected


def test_exact_and_near_duplicates_are_dropped(tmp_path):
    records = _python_docs_records(60)
    long = max(records, key=len)
    words = long.split(" ")
    words[len(words) // 2] = "changed"
    near = " ".join(words)
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
        for r in records + [records[3], records[7], near]:
            f.write(json.dumps({"text": r}) + "\n")
    exact = prepare([tmp_path / "d.jsonl"], tmp_path / "e.txt")
    assert exact["dropped"]["duplicate"] == 2
    kept = exact["documents"]
    near_run = prepare([tmp_path / "d.jsonl"], tmp_path / "n.txt", near_duplicate_threshold=0.8)
    assert near_run["dropped"]["duplicate"] == 2 and near_run["dropped"]["near_duplicate"] >= 1
    assert near_run["documents"] == kept - near_run["dropped"]["near_duplicate"]
    off = prepare([tmp_path / "d.jsonl"], tmp_path / "o.txt", dedup=False)
    assert off["documents"] == kept + 2


def test_hash_set_matches_a_python_set():
    from bert_tf.data.corpus import HashSet64

    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 50_000, dtype=np.uint64).tolist()
    values += values[:5000] + [0, 0, 2**64 - 1]
    ours, reference = HashSet64(capacity=8), set()
    for v in values:
        assert ours.add(v) == (v not in reference)
        reference.add(v)
    assert len(ours) == len(reference)


def test_invalid_utf8_is_counted_and_replaced_with_its_offset(tmp_path):
    good = "First sentence of the document is here. Second sentence follows it now.\n"
    data = good.encode() + b"Bad byte \xff here and more words to make it long enough. Ok.\n"
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    summary = prepare([path], tmp_path / "o.txt")
    assert summary["invalid_utf8_bytes"] == 1
    assert summary["first_invalid_utf8"] == f"{path}: byte {len(good.encode()) + 9}"
    assert "Bad byte \ufffd here" in open(tmp_path / "o.txt", encoding="utf-8").read()
    # Inside a dump too: one byte spoiled in the decompressed XML of the real fragment (cut
    # after the Albedo article, and closed).
    xml = bz2.decompress(shared("corpus", WIKI).read_bytes())
    at = xml.index(b"Albedo depends on")
    xml = xml[:xml.index(b"</page>", at) + 7] + b"\n</mediawiki>\n"
    dump = tmp_path / "spoiled.xml"
    dump.write_bytes(xml[:at] + b"\xfe" + xml[at + 1:])
    summary = prepare([dump], tmp_path / "d.txt")
    assert summary["invalid_utf8_bytes"] == 1
    assert summary["first_invalid_utf8"] == f"{dump}: byte {at}"


def _fails(result, *fragments):
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, line


def test_bad_inputs_give_one_line_and_write_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out" / "c.txt"
    not_wiki = tmp_path / "feed.xml"
    not_wiki.write_text("<?xml version='1.0'?><rss><item>x</item></rss>")
    truncated = tmp_path / "cut.xml.bz2"
    truncated.write_bytes(shared("corpus", WIKI).read_bytes()[:200_000])
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "A sentence here."}\n{"body": "no text field"}\n')
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["x"]}), parquet)
    short = tmp_path / "short.txt"
    short.write_text("Too short.\n\nAlso short.\n")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"text\x00\x01\x02")
    cases = [
        (not_wiki, [], [str(not_wiki), "not a MediaWiki XML dump", "<rss>"]),
        (truncated, [], [str(truncated), "truncated"]),
        (jsonl, [], [f"{jsonl}:2", "no field 'text'", "body", "--text_field"]),
        (parquet, [], [str(parquet), "no column 'text'", "body", "--text_field"]),
        (short, [], ["no document left after cleaning", "2 too short"]),
        (binary, [], [str(binary), "byte 4", "NUL"]),
        (shared("corpus", "enwiki-table-markup.xml.bz2"), ["--num_output_shards=8"],
         ["5 document(s) kept for --num_output_shards=8"]),
        (tmp_path, [], [f"--input_file={tmp_path} is a folder"]),
    ]
    for path, extra, fragments in cases:
        result = run(f"--input_file={path}", f"--output_file={out}",
                     *(extra or ["--num_output_shards=2"]))
        _fails(result, *fragments)
        assert not out.parent.exists(), path  # not even the folder it would have made
    # An existing output is kept unless --overwrite_output.
    good = tmp_path / "good.txt"
    good.write_text("One sentence of a document here. Another one of this document follows "
                    "now. And a third sentence closes the small document for the test.\n")
    assert run(f"--input_file={good}", f"--output_file={out}").returncode == 0
    before = out.read_bytes()
    _fails(run(f"--input_file={good}", f"--output_file={out}"), "--overwrite_output")
    assert out.read_bytes() == before
    result = run(f"--input_file={good}", f"--output_file={out}", "--overwrite_output")
    assert result.returncode == 0 and "Wrote 1 documents, 3 sentences" in result.stdout


def test_formats_edges_and_markup_details(tmp_path):
    """Text without blank lines is cut at 1 M characters (memory) or read one document a
    line; a JSONL file with a BOM; a gzip'd dump; a self-closing ref whose name holds "/";
    quantities from {{convert}} kept in their sentence."""
    from bert_tf.data.mediawiki import article_paragraphs

    line = "This sentence is one of many in a file without any blank line at all. "
    (tmp_path / "flat.txt").write_text((line * 40 + "\n") * 500, encoding="utf-8")
    cut = prepare([tmp_path / "flat.txt"], tmp_path / "a.txt")
    assert cut["documents_cut_at_1m_characters"] == 1 and cut["documents"] == 2
    lines = prepare([tmp_path / "flat.txt"], tmp_path / "b.txt", input_format="lines",
                    dedup=False)
    assert lines["documents"] == 500
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(
        {"text": line * 3}).encode() + b"\n")
    assert prepare([tmp_path / "bom.jsonl"], tmp_path / "c.txt")["documents"] == 1
    xml = bz2.decompress(shared("corpus", "enwiki-table-markup.xml.bz2").read_bytes())
    with gzip.open(tmp_path / "dump.xml.gz", "wb") as f:
        f.write(xml)
    assert prepare([tmp_path / "dump.xml.gz"], tmp_path / "d.txt")["documents"] == 5
    text = ("Alpha is first.<ref name=\"a/b\"/> It has many uses.<ref>A cite.</ref>\n\n"
            "It can reach {{convert|15|m|ft}} when its tail is {{convert|2|to|3|m}} long. "
            "Andorra ({{lang-ca|Principat d'Andorra}}; {{IPA|x}}) is small.")
    assert article_paragraphs(text) == [
        "Alpha is first. It has many uses.",
        "It can reach 15 m when its tail is 2 to 3 m long. Andorra (Principat d'Andorra) is "
        "small."]
