"""Every reader of users' files (GLUE TSVs, CoNLL, SQuAD JSON, pre-training corpora) on a file
that is binary or not UTF-8: one DataError naming the file and the byte offset, never a
UnicodeDecodeError."""

import pytest

from tests.conftest import shared


def _glue(path):
    from bert_tf.data.glue import get_processor

    get_processor("MRPC").get_train_examples(str(path.parent))


def _conll(path):
    from bert_tf.data.conll import read_conll

    read_conll(str(path))


def _squad(path):
    from bert_tf.data.squad import read_squad

    read_squad(str(path), False)


def _corpus(path):
    from bert_tf.data.pretraining import read_documents

    list(read_documents([str(path)]))


def _real_head(parts, lines):
    return b"".join(shared(*parts).read_bytes().splitlines(keepends=True)[:lines])


READERS = {
    "glue": (_glue, "train.tsv", ("glue", "MRPC", "train.tsv"), 5),
    "conll": (_conll, "eng.train", ("conll2003", "eng.train"), 30),
    "corpus": (_corpus, "corpus.txt", ("corpus", "python_docs_heldout.txt"), 30),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("damage", ["latin1", "binary"])
def test_a_bad_byte_is_named_with_its_offset(tmp_path, reader, damage):
    from bert_tf.data.glue import DataError

    read, name, source, lines = READERS[reader]
    head = _real_head(source, lines)
    bad = "Café".encode("latin-1") if damage == "latin1" else b"\x00\x01\x02"
    where = len(head) + 3 if damage == "latin1" else len(head)
    path = tmp_path / name
    path.write_bytes(head + bad + b" x\n")
    with pytest.raises(DataError) as error:
        read(path)
    message = str(error.value)
    assert str(path) in message and f"byte {where}" in message, message
    assert ("not UTF-8" if damage == "latin1" else "binary") in message


@pytest.mark.parametrize("damage", ["latin1", "binary"])
def test_squad_json_bad_byte(tmp_path, damage):
    from bert_tf.data.glue import DataError

    head = shared("squad", "slices", "dev-v2.0-first5articles.json").read_bytes()[:5000]
    bad = "é".encode("latin-1") if damage == "latin1" else b"\x00"
    path = tmp_path / "dev.json"
    path.write_bytes(head + bad + b'"}]}')
    with pytest.raises(DataError) as error:
        _squad(path)
    message = str(error.value)
    assert str(path) in message and "byte 5000" in message, message
