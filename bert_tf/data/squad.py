"""SQuAD 1.1 / 2.0: the JSON read and checked, questions turned into windowed features (Google's
pre-processing), streamed to an on-disk feature store that training and prediction memory-map.

Google's run_squad.py pre-processing, kept exactly (the round-trip test reproduces its ceiling
on dev-v1.1 and its 10,833 features):
  - the context is split on whitespace (space, tab, CR, LF, U+202F) into "doc tokens"; an
    answer's character span becomes a span of doc tokens; a training answer whose text cannot
    be recovered from those tokens is skipped (and counted);
  - every doc token is WordPiece-tokenized on its own; the answer's piece span is then narrowed
    to the pieces that spell the answer (`improve_answer_span`, e.g. "1895" out of
    "(1895-1943).");
  - the question keeps its first max_query_length pieces; the document is cut into windows of
    max_seq_length - len(question) - 3 pieces, each starting doc_stride pieces after the last
    (a step, not Hugging Face's overlap); a window is [CLS] question [SEP] window [SEP];
  - a training window that does not hold the whole answer (and every window of an unanswerable
    question) points at [CLS] (position 0).

What differs is where the work happens: the context is tokenized once per paragraph for all its
questions (Google tokenizes it again for each question; dev-v1.1 converts in 0.9 s here against
17.7 s, bench/bench_squad.py convert), with the memoising tokenizer, in worker processes, and features go to disk as they are made, so memory does not grow with the
training set (train-v2.0 has 130k questions). The store is plain little-endian arrays and a JSON
header (no pickle), kept under a name derived from the file's sha256 and every setting.

Dimension legend: N features, S max_seq_length, W a batch's padded width, B batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil

import numpy as np

from bert_tf.data.glue import DataError

logger = logging.getLogger("bert_tf")

STORE_FORMAT = 1
# Google's run_squad.py is_whitespace: these five characters only (not the tokenizer's set).
_DOC_TOKEN = re.compile("[^ \t\r\n\u202f]+")
# Per-feature columns of the store: name -> dtype.
FEATURE_COLUMNS = {"row_splits": np.int64, "query_length": np.int32, "example_index": np.int32,
                   "span_start": np.int32, "span_length": np.int32,
                   "start_positions": np.int32, "end_positions": np.int32}


@dataclasses.dataclass
class SquadExample:
    """One question. `answers`: [{"text", "answer_start"}] as in the file (empty for an
    unanswerable or unlabelled question); `paragraph`: index into SquadData.contexts."""
    qas_id: str
    question_text: str
    paragraph: int
    answers: list
    is_impossible: bool = False


@dataclasses.dataclass
class SquadData:
    """A SQuAD file read and checked: contexts (one per paragraph) and questions in file order.
    `version_2`: the file marks unanswerable questions (`is_impossible`); `has_answers`: every
    question carries its answers (or is marked unanswerable), so predictions can be scored."""
    path: str
    contexts: list
    examples: list
    version_2: bool
    has_answers: bool


def doc_tokens(context: str) -> tuple[list[str], np.ndarray]:
    """Google's whitespace split of a context: (doc tokens, char_to_word int32 [len(context)]),
    where char_to_word[i] is the doc token holding character i (for whitespace, the token before
    it; -1 before the first)."""
    matches = list(_DOC_TOKEN.finditer(context))
    starts = np.fromiter((m.start() for m in matches), np.int64, len(matches))
    char_to_word = (np.searchsorted(starts, np.arange(len(context)), side="right") - 1)
    return [m.group() for m in matches], char_to_word.astype(np.int32)


# -- reading ----------------------------------------------------------------------------------------

def read_squad(path: str, version_2_with_negative: bool, for_training: bool = False) -> SquadData:
    """Read and check a SQuAD JSON file. Raises DataError (`path: question ID: problem`, or
    `path: problem`) on what would otherwise fail mid-run or train on wrong spans:
      - not SQuAD JSON (no data -> paragraphs -> context / qas);
      - v2.0 data (is_impossible) without --version_2_with_negative, or v1.1 data with it;
      - a question with an empty context, an empty question or a duplicate id;
      - an answer whose answer_start does not point at its text;
      - for_training: an answerable question without an answer.
    FileNotFoundError for a missing file."""
    with open(path, "rb") as f:
        data = f.read()
    if b"\x00" in data:
        raise DataError(f"{path}: byte {data.index(bytes(1))} is a NUL byte: this looks like a "
                        "binary file, not SQuAD JSON")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start} is not UTF-8 ({e.reason}): SQuAD JSON is UTF-8 "
                        "text") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not SQuAD JSON ({e}); pass a train-v1.1.json / dev-v2.0.json "
                        "style file") from None
    articles = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{path}: not SQuAD JSON: expected an object with a \"data\" list of "
                        "articles (each with \"paragraphs\" of \"context\" and \"qas\")")
    contexts, examples, seen = [], [], set()
    marks_impossible = False  # some question is_impossible: 2.0 data
    v2_layout = False  # some question carries the is_impossible key at all
    labelled = False  # some question carries an answer
    has_answers = True
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: not SQuAD JSON: article {a} has no \"paragraphs\" list")
        for paragraph in paragraphs:
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list) \
                    or not isinstance(paragraph.get("context"), str):
                raise DataError(f"{path}: not SQuAD JSON: a paragraph of article {a} lacks "
                                "\"context\" (text) or \"qas\" (a list)")
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                example = _read_question(path, qa, context, len(contexts), seen)
                marks_impossible |= example.is_impossible
                v2_layout |= "is_impossible" in qa
                labelled |= bool(example.answers)
                has_answers &= bool(example.answers) or example.is_impossible
                if for_training and not example.answers and not example.is_impossible:
                    raise DataError(f"{path}: question {example.qas_id}: no answer to train on "
                                    "(and not marked is_impossible)")
                examples.append(example)
            contexts.append(context)
    if not examples:
        raise DataError(f"{path}: holds no questions")
    if marks_impossible and not version_2_with_negative:
        raise DataError(f"{path}: SQuAD 2.0 data (questions marked is_impossible): pass "
                        "--version_2_with_negative")
    # Unlabelled questions (id and question only) fit either version: a 2.0 model may predict
    # new questions. Labelled data without the is_impossible key is 1.1.
    if version_2_with_negative and labelled and not v2_layout:
        raise DataError(f"{path}: SQuAD 1.1 data (no question carries is_impossible) with "
                        "--version_2_with_negative: leave the flag out, or pass 2.0 data")
    return SquadData(path, contexts, examples, marks_impossible or version_2_with_negative,
                     has_answers)


def _read_question(path, qa, context, paragraph, seen) -> SquadExample:
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or \
            not isinstance(qa.get("question"), str):
        what = qa.get("id") if isinstance(qa, dict) else qa
        raise DataError(f"{path}: not SQuAD JSON: question {what!r} lacks a text \"id\" or "
                        "\"question\"")
    qid = qa["id"]
    if qid in seen:
        raise DataError(f"{path}: question {qid}: the id appears twice (predictions are keyed "
                        "by id)")
    seen.add(qid)
    if not context.strip():
        raise DataError(f"{path}: question {qid}: its context is empty")
    if not qa["question"].strip():
        raise DataError(f"{path}: question {qid}: the question text is empty")
    impossible = bool(qa.get("is_impossible", False))
    answers = [] if impossible else qa.get("answers", [])
    if not isinstance(answers, list):
        raise DataError(f"{path}: question {qid}: \"answers\" is not a list")
    for answer in answers:
        text = answer.get("text") if isinstance(answer, dict) else None
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not isinstance(start, int) or not text or start < 0:
            raise DataError(f"{path}: question {qid}: an answer lacks \"text\" or an integer "
                            "\"answer_start\" >= 0")
        if context[start:start + len(text)] != text:
            found = context.find(text)
            hint = (f" (the text is at {found})" if found >= 0 else
                    " (the text is not in the context)")
            raise DataError(f"{path}: question {qid}: answer_start {start} does not point at "
                            f"its text {text!r}{hint}")
    return SquadExample(qid, qa["question"], paragraph, answers, impossible)


# -- features ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    for_training: bool = False


def improve_answer_span(pieces: list[str], start: int, end: int, answer_pieces: list[str]
                        ) -> tuple[int, int]:
    """The narrowest piece span inside [start, end] whose pieces are exactly the answer's
    (Google's _improve_answer_span: "1895" out of "( 1895 - 1943 ) ."); the span as given when
    none is (an answer inside a word piece, "Japan" in "Japanese")."""
    target = " ".join(answer_pieces)
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(pieces[new_start:new_end + 1]) == target:
                return new_start, new_end
    return start, end


def doc_spans(num_pieces: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """Google's sliding windows over a document of num_pieces pieces: [(start, length)], each
    window starting min(length, doc_stride) pieces after the previous, the last one ending at
    the document's end."""
    spans, start = [], 0
    while start < num_pieces:
        length = min(num_pieces - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == num_pieces:
            break
        start += min(length, doc_stride)
    return spans


def paragraph_features(context: str, questions: list, tokenizer, settings: FeatureSettings
                       ) -> dict:
    """The features of one paragraph's questions: the context tokenized once.

    questions: [(example_index, question_text, answer or None, is_impossible)], answer a
    {"text", "answer_start"} (training only). Returns the column arrays of FEATURE_COLUMNS (with
    row_splits relative to this chunk, starting at 0), the flat "input_ids" int32, the
    paragraph's "tok_to_orig" int32 [pieces] (piece -> doc token) and "skipped": training
    questions whose answer cannot be recovered from whitespace tokens (Google skips them)."""
    words, char_to_word = doc_tokens(context)
    ids_of = getattr(tokenizer, "ids", None) or (  # CachedTokenizer; FullTokenizer below
        lambda text: tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))
    tok_to_orig, orig_to_tok, doc_ids = [], [], []
    for w, word in enumerate(words):
        orig_to_tok.append(len(doc_ids))
        pieces = ids_of(word)
        tok_to_orig += [w] * len(pieces)
        doc_ids += pieces
    cls_id, sep_id = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    pieces_text = None  # the doc pieces as strings, made when a training answer needs them
    cols = {k: [] for k in FEATURE_COLUMNS}
    flat, skipped, length_total = [], 0, 0
    for example_index, question, answer, impossible in questions:
        query = ids_of(question)[:settings.max_query_length]
        tok_start = tok_end = -1
        if settings.for_training and not impossible:
            start_char, text = answer["answer_start"], answer["text"]
            start_word = char_to_word[start_char]
            end_word = char_to_word[start_char + len(text) - 1]
            actual = " ".join(words[start_word:end_word + 1])
            if actual.find(" ".join(text.split())) == -1:
                skipped += 1
                continue
            tok_start = orig_to_tok[start_word]
            tok_end = (orig_to_tok[end_word + 1] - 1 if end_word < len(words) - 1
                       else len(doc_ids) - 1)
            if pieces_text is None:
                pieces_text = tokenizer.convert_ids_to_tokens(doc_ids)
            tok_start, tok_end = improve_answer_span(
                pieces_text, tok_start, tok_end, tokenizer.convert_ids_to_tokens(ids_of(text)))
        room = settings.max_seq_length - len(query) - 3
        offset = len(query) + 2  # [CLS] question [SEP]
        for start, length in doc_spans(len(doc_ids), room, settings.doc_stride):
            row = [cls_id, *query, sep_id, *doc_ids[start:start + length], sep_id]
            flat += row
            length_total += len(row)
            cols["row_splits"].append(length_total)
            cols["query_length"].append(len(query))
            cols["example_index"].append(example_index)
            cols["span_start"].append(start)
            cols["span_length"].append(length)
            inside = tok_start >= start and tok_end <= start + length - 1
            if settings.for_training and not impossible and inside:
                cols["start_positions"].append(tok_start - start + offset)
                cols["end_positions"].append(tok_end - start + offset)
            else:  # no answer in this window (or none at all): [CLS]
                cols["start_positions"].append(0)
                cols["end_positions"].append(0)
    out = {k: np.asarray(v, FEATURE_COLUMNS[k]) for k, v in cols.items()}
    out["input_ids"] = np.asarray(flat, np.int32)
    out["tok_to_orig"] = np.asarray(tok_to_orig, np.int32)
    out["skipped"] = skipped
    return out


# -- the worker pool --------------------------------------------------------------------------------

_WORKER = {}


def _init_worker(vocab_file, do_lower_case, settings, reference):
    from bert_tf.tokenization import make_tokenizer

    key = (os.path.abspath(vocab_file), do_lower_case, reference)
    if _WORKER.get("key") != key:  # in-process conversions reuse the tokenizer and its memo
        _WORKER["tokenizer"] = make_tokenizer(vocab_file, do_lower_case, reference=reference)
        _WORKER["key"] = key
    _WORKER["settings"] = settings


def _convert_chunk(chunk):
    """[(paragraph index, context, questions)] -> [(paragraph index, features)]."""
    return [(p, paragraph_features(context, questions, _WORKER["tokenizer"], _WORKER["settings"]))
            for p, context, questions in chunk]


def _chunks(data: SquadData, for_training: bool, paragraphs_per_chunk: int):
    by_paragraph: dict[int, list] = {}
    for i, ex in enumerate(data.examples):
        answer = ex.answers[0] if (for_training and ex.answers) else None
        by_paragraph.setdefault(ex.paragraph, []).append(
            (i, ex.question_text, answer, ex.is_impossible))
    chunk = []
    for p in sorted(by_paragraph):
        chunk.append((p, data.contexts[p], by_paragraph[p]))
        if len(chunk) == paragraphs_per_chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- the feature store ------------------------------------------------------------------------------

_DIGESTS: dict = {}


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) for this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256(path)
    return _DIGESTS[key]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_key(data_sha256: str, vocab_sha256: str, do_lower_case: bool,
              settings: FeatureSettings, version_2: bool, questions: str = "") -> str:
    """The store's name: a digest of the input file's and vocabulary's sha256, the questions
    converted (a digest of their ids: --max_train_examples takes the first N) and every setting
    that changes a feature."""
    key = {"format": STORE_FORMAT, "data": data_sha256, "vocab": vocab_sha256,
           "lower": bool(do_lower_case), "version_2": bool(version_2), "questions": questions,
           **dataclasses.asdict(settings)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class SquadFeatures:
    """The features of one SQuAD file, memory-mapped from its store: what training batches and
    prediction read (the interface of records.FeatureTable: len, lengths, batch, batch_spec).

    Per feature: input_ids (flat int32, cut by row_splits int64 [N+1]), query_length,
    example_index, span_start / span_length (the window, in the paragraph's pieces),
    start_positions / end_positions (training; 0: [CLS]). Per paragraph: tok_to_orig (flat int32
    cut by paragraph_splits). `meta`: the header (counts, settings, skipped answers)."""

    def __init__(self, directory: str):
        with open(os.path.join(directory, "features.json"), encoding="utf-8") as f:
            self.meta = json.load(f)
        self.directory = directory
        self.columns = {}
        for name, spec in self.meta["arrays"].items():
            path = os.path.join(directory, f"{name}.bin")
            count = spec["count"]
            self.columns[name] = (np.memmap(path, np.dtype(spec["dtype"]), "r", shape=(count,))
                                  if count else np.zeros((0,), spec["dtype"]))
        splits = self.columns["row_splits"]
        self.lengths = (splits[1:] - splits[:-1]).astype(np.int32)
        self.max_seq_length = self.meta["settings"]["max_seq_length"]

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, name):
        return self.columns[name]

    def row(self, i: int) -> np.ndarray:
        splits = self.columns["row_splits"]
        return np.asarray(self.columns["input_ids"][splits[i]:splits[i + 1]])

    def paragraph_tok_to_orig(self, paragraph: int) -> np.ndarray:
        splits = self.columns["paragraph_splits"]
        return np.asarray(self.columns["tok_to_orig"][splits[paragraph]:splits[paragraph + 1]])

    def batch(self, rows: np.ndarray, width: int) -> dict:
        """{input_ids, input_mask, segment_ids: int32 [B,W]; start_positions, end_positions:
        int32 [B]} for `rows`; the mask and segments follow from the lengths and the question's
        length ([CLS] question [SEP] is segment 0)."""
        rows = np.asarray(rows)
        ids = np.zeros((len(rows), width), np.int32)
        for b, r in enumerate(rows):
            row = self.row(int(r))
            ids[b, :len(row)] = row
        positions = np.arange(width)[None, :]
        mask = positions < self.lengths[rows][:, None]
        segment = (positions >= (self.columns["query_length"][rows][:, None] + 2)) & mask
        return {"input_ids": ids, "input_mask": mask.astype(np.int32),
                "segment_ids": segment.astype(np.int32),
                "start_positions": np.asarray(self.columns["start_positions"][rows], np.int32),
                "end_positions": np.asarray(self.columns["end_positions"][rows], np.int32)}

    def batch_spec(self) -> dict:
        """{name: (ndim, numpy dtype)} of a batch, for tf.data's signature."""
        return {"input_ids": (2, np.int32), "input_mask": (2, np.int32),
                "segment_ids": (2, np.int32), "start_positions": (1, np.int32),
                "end_positions": (1, np.int32)}


def convert_to_store(data: SquadData, vocab_file: str, do_lower_case: bool,
                     settings: FeatureSettings, cache_dir: str, num_workers: int = 1,
                     reference_tokenizer: bool = False, progress: bool = False,
                     paragraphs_per_chunk: int = 32) -> SquadFeatures:
    """The features of `data`, from the store under cache_dir when one with this key exists,
    else converted (num_workers processes, paragraphs in chunks, written as they come, in file
    order whatever the worker count) into a temporary folder renamed into place when complete:
    a killed conversion leaves nothing a later run would take for a store."""
    questions = hashlib.sha256("\n".join(ex.qas_id for ex in data.examples).encode())
    key = store_key(file_sha256(data.path), file_sha256(vocab_file), do_lower_case, settings,
                    data.version_2, f"{len(data.examples)}-{questions.hexdigest()[:16]}")
    kind = "train" if settings.for_training else "predict"
    directory = os.path.join(cache_dir, f"squad-{kind}-{key}")
    if os.path.isfile(os.path.join(directory, "features.json")):
        try:
            features = SquadFeatures(directory)
            logger.info("features of %s: %d, from %s", data.path, len(features), directory)
            return features
        except (OSError, ValueError, KeyError) as e:
            logger.warning("feature store %s is unreadable (%s): converting again", directory, e)
            shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{directory}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = _write_store(data, vocab_file, do_lower_case, settings, tmp, num_workers,
                            reference_tokenizer, progress, paragraphs_per_chunk)
        with open(os.path.join(tmp, "features.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        try:
            os.rename(tmp, directory)
        except OSError:  # another process (a Horovod rank) finished the same store first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    features = SquadFeatures(directory)
    skipped = (f" ({features.meta['skipped']} skipped: answer not recoverable from whitespace "
               "tokens)" if settings.for_training else "")
    logger.info("features of %s: %d windows from %d questions%s, stored in %s", data.path,
                len(features), len(data.examples), skipped, directory)
    return features


def _write_store(data, vocab_file, do_lower_case, settings, directory, num_workers,
                 reference_tokenizer, progress, paragraphs_per_chunk) -> dict:
    names = list(FEATURE_COLUMNS) + ["input_ids", "tok_to_orig", "paragraph_splits"]
    dtypes = {**FEATURE_COLUMNS, "input_ids": np.int32, "tok_to_orig": np.int32,
              "paragraph_splits": np.int64}
    files = {n: open(os.path.join(directory, f"{n}.bin"), "wb") for n in names}
    counts = dict.fromkeys(names, 0)

    def write(name, values):
        values = np.asarray(values, np.dtype(dtypes[name]).newbyteorder("<"))
        files[name].write(values.tobytes())
        counts[name] += len(values)

    write("row_splits", [0])
    write("paragraph_splits", [0])
    total_ids = total_pieces = skipped = 0
    # Every paragraph gets its tok_to_orig slot (those without questions an empty one), so
    # paragraph p's pieces are paragraph_splits[p]:paragraph_splits[p + 1].
    next_paragraph = 0
    chunks = _chunks(data, settings.for_training, paragraphs_per_chunk)
    total = -(-len({ex.paragraph for ex in data.examples}) // paragraphs_per_chunk)
    init = (vocab_file, do_lower_case, settings, reference_tokenizer)
    pool = None
    try:
        if num_workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(num_workers, _init_worker, init)
            results = pool.imap(_convert_chunk, chunks)
        else:
            _init_worker(*init)
            results = map(_convert_chunk, chunks)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=total, unit="chunk",
                           desc=f"features of {os.path.basename(data.path)}")
        for result in results:
            for p, feats in result:
                while next_paragraph < p:
                    write("paragraph_splits", [total_pieces])
                    next_paragraph += 1
                write("tok_to_orig", feats["tok_to_orig"])
                total_pieces += len(feats["tok_to_orig"])
                write("paragraph_splits", [total_pieces])
                next_paragraph = p + 1
                write("row_splits", feats["row_splits"] + total_ids)
                total_ids += len(feats["input_ids"])
                write("input_ids", feats["input_ids"])
                for name in FEATURE_COLUMNS:
                    if name != "row_splits":
                        write(name, feats[name])
                skipped += feats["skipped"]
        while next_paragraph < len(data.contexts):
            write("paragraph_splits", [total_pieces])
            next_paragraph += 1
    finally:
        if pool is not None:
            pool.terminate()
        for f in files.values():
            f.close()
    arrays = {n: {"dtype": np.dtype(dtypes[n]).newbyteorder("<").str, "count": counts[n]}
              for n in names}
    return {"format": STORE_FORMAT, "source": os.path.abspath(data.path),
            "examples": len(data.examples), "features": counts["row_splits"] - 1,
            "skipped": skipped, "do_lower_case": bool(do_lower_case),
            "version_2": data.version_2, "settings": dataclasses.asdict(settings),
            "arrays": arrays}
