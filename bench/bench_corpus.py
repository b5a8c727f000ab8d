"""prepare_corpus.py against the usual chain, and its memory as the corpus grows.

  python bench/bench_corpus.py speed [--rounds 3] [--workers 2] [--output FILE]
  python bench/bench_corpus.py memory [--copies 10] [--output FILE]

speed: the real Wikipedia dump fragment (../shared/data/corpus, 1.7 MB bz2, 6.1 MB XML, 106
  articles), --copies times in one .xml.bz2 (pages made distinct; default 5, 30 MB of XML, so
  that start-up is not what is timed), to one sentence a line, in alternating rounds:
    bert_tf   prepare_corpus.py --num_workers=W --nodedup (mwparserfromhell, blingfire; the
              copies differ in one word, which cleaning can drop with a heading or infobox);
    chain     WikiExtractor 3.1 (`python -m wikiextractor.WikiExtractor --json --processes W`,
              the first stage of NVIDIA's and AzureML-BERT's preparation), then its documents'
              paragraphs split into sentences by blingfire: the peers' second stage is NLTK's
              punkt, whose model `nltk.download` fetches from the web, not reachable here.
  WikiExtractor is AGPL: it runs as a program from its own virtualenv (--wikiextractor_python;
  `python -m venv .venv-wx && .venv-wx/bin/pip install wikiextractor==3.1.0 blingfire numpy`), never
  imported here. Medians of wall seconds, MB/s of XML, the ratio.
memory: peak RSS (bench/peak_rss.py, whole process tree) of prepare_corpus.py on the Python
  documentation (one paragraph a line) and on --copies copies of it, each copy's documents made
  distinct (a marker word added to their first line) so that de-duplication keeps them all.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, "..", "shared", "data", "corpus")
WIKI = os.path.join(CORPUS, "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")

# The chain's second stage: WikiExtractor's JSON documents -> sentences, one a line.
SPLIT = r"""
import glob, json, sys, blingfire
with open(sys.argv[2], "w", encoding="utf-8") as out:
    for path in sorted(glob.glob(sys.argv[1] + "/*/wiki_*")):
        for line in open(path, encoding="utf-8"):
            text = json.loads(line)["text"]
            sentences = [s for p in text.split("\n") if p.strip()
                         for s in blingfire.text_to_sentences(p).split("\n") if s.strip()]
            if sentences:
                out.write("\n".join(sentences) + "\n\n")
"""


def _timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def repeated_dump(copies: int, path: str) -> float:
    """The fragment's pages `copies` times in one dump (.xml.bz2), each copy's titles and texts
    made distinct (a marker word) so no page is a duplicate of another. Returns the XML MB."""
    xml = bz2.decompress(open(WIKI, "rb").read()).decode("utf-8")
    head, rest = xml.split("<page>", 1)
    pages, tail = ("<page>" + rest).rsplit("</page>", 1)
    pages += "</page>"
    body = [pages if c == 0 else pages.replace("<title>", f"<title>Copy{c} ").replace(
        'xml:space="preserve">', f'xml:space="preserve">Copy{c} ') for c in range(copies)]
    data = (head + "".join(body) + tail).encode("utf-8")
    with bz2.open(path, "wb") as f:
        f.write(data)
    return len(data) / 1e6


def speed(a):
    work = tempfile.mkdtemp(prefix="bench_corpus_")
    dump = os.path.join(work, f"enwiki-fragment-x{a.copies}.xml.bz2")
    xml_mb = repeated_dump(a.copies, dump)
    ours = [sys.executable, os.path.join(ROOT, "prepare_corpus.py"), f"--input_file={dump}",
            f"--output_file={work}/ours.txt", "--overwrite_output", "--noprogress",
            f"--num_workers={a.workers}", "--nodedup"]  # copies differ in a word only
    extract = [a.wikiextractor_python, "-m", "wikiextractor.WikiExtractor", "--json", "-q",
               "--processes", str(a.workers), "-o", f"{work}/wx", dump]
    split = [a.wikiextractor_python, "-c", SPLIT, f"{work}/wx", f"{work}/chain.txt"]
    times = {"bert_tf": [], "chain": [], "chain_extract": []}
    for _ in range(a.rounds):
        times["bert_tf"].append(_timed(ours))
        subprocess.run(["rm", "-rf", f"{work}/wx"], check=True)
        extract_seconds = _timed(extract)
        times["chain_extract"].append(extract_seconds)
        times["chain"].append(extract_seconds + _timed(split))
    medians = {k: statistics.median(v) for k, v in times.items()}
    with open(f"{work}/ours.txt.summary.json") as f:
        summary = json.load(f)
    chain_text = open(f"{work}/chain.txt", encoding="utf-8").read()
    result = {"bench": "prepare_corpus_speed", "input": os.path.basename(WIKI),
              "copies": a.copies, "xml_mb": xml_mb,
              "workers": a.workers, "rounds": a.rounds, "median_seconds": medians,
              "xml_mb_per_second": {k: xml_mb / v for k, v in medians.items()},
              "bert_tf_vs_chain": medians["chain"] / medians["bert_tf"],
              "output": {"bert_tf": {"documents": summary["documents"],
                                     "sentences": summary["sentences"]},
                         "chain": {"documents": chain_text.count("\n\n"),
                                   "sentences": sum(1 for l in chain_text.split("\n") if l)}}}
    emit(result, a)


def memory(a):
    work = tempfile.mkdtemp(prefix="bench_corpus_mem_")
    source = os.path.join(CORPUS, "python_docs_raw_train.txt")
    documents = open(source, encoding="utf-8").read().strip("\n").split("\n\n")
    runs = []
    for copies in (1, a.copies):
        path = os.path.join(work, f"docs-x{copies}.txt")
        with open(path, "w", encoding="utf-8") as f:
            for c in range(copies):
                for d in documents:
                    f.write((f"Copy{c} " if c else "") + d + "\n\n")
        cmd = [sys.executable, os.path.join(HERE, "peak_rss.py"), "--", sys.executable,
               os.path.join(ROOT, "prepare_corpus.py"), f"--input_file={path}",
               f"--output_file={path}.out", "--num_output_shards=4", "--noprogress",
               f"--num_workers={a.workers}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        with open(path + ".out.summary.json") as f:
            summary = json.load(f)
        runs.append({"copies": copies, "input_mb": os.path.getsize(path) / 1e6,
                     "documents": summary["documents"], "sentences": summary["sentences"],
                     "peak_rss": proc.stderr.strip().splitlines()[-1]})
        print(json.dumps(runs[-1]), flush=True)
    emit({"bench": "prepare_corpus_memory", "workers": a.workers, "runs": runs}, a)


def emit(result, a):
    print(json.dumps(result), flush=True)
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(result) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["speed", "memory"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--copies", type=int, default=None,
                   help="copies of the input (speed: 5 of the dump; memory: 10 of the docs)")
    p.add_argument("--wikiextractor_python", default=os.path.join(ROOT, ".venv-wx", "bin",
                                                                  "python"))
    p.add_argument("--output", default=None, help="append the JSON line here")
    a = p.parse_args()
    a.copies = a.copies or (5 if a.what == "speed" else 10)
    {"speed": speed, "memory": memory}[a.what](a)


if __name__ == "__main__":
    main()
