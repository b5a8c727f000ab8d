"""A fine-tuned model and Google's tokenizer in one TensorFlow graph: a SavedModel that takes
raw UTF-8 strings and answers with label names and probabilities (classification) or entities
with their character spans (NER). Loading it needs `tensorflow` and `tensorflow_text` only
(`import tensorflow_text` registers FastWordpieceTokenizeWithOffsets, the one op that is not
TensorFlow's own; TensorFlow Serving links it since 2.12).

    tf.saved_model.load(path).signatures["serving_default"](text_a=tf.constant(["..."]), ...)

Signatures of a classifier (B texts; probabilities float32 [B, L], label tf.string [B]):
    text       (text_a)          -> probabilities, label   (regression: score float32 [B])
    text_pair  (text_a, text_b)  -> the same; an empty text_b is a single text, as in Google's
                                    run_classifier.py
    serving_default: text_pair for sentence-pair tasks (MRPC, ...), else text.
Sequences are cut as Google's `_truncate_seq_pair` cuts them (the longer text loses its last
token until the pair fits max_seq_length - 3), in closed form: tensorflow-text's
RoundRobinTrimmer cuts otherwise and is linked by TF Serving only from 2.20. A batch is padded
to its longest sequence, not to max_seq_length.

Threads. The forward pass is built as `parallel_chains` chains of kernels over chunks of the
sequence (bert_tf.serving.forward.encode), meant to run one chain per core:
    inter_op_parallelism_threads = min(parallel_chains, cores)
    intra_op_parallelism_threads = max(1, cores // parallel_chains)
(TensorFlow Serving: --tensorflow_inter_op_parallelism / --tensorflow_intra_op_parallelism;
Python: tf.config.threading before the first op; azure/scoring/score.py does it from
serving_info.json). A kernel split over threads pays a hand-off per kernel, and a request's
kernels are many and small: on 2 cores the MRPC model at batch 1 x 128 takes 17.8 ms under
TensorFlow's default threads unsplit, 10.4 ms as 2 chains of single-threaded kernels
(bench/README.md). Under the default threads the chains still run, only slower.

Each weight is stored once: the graph's functions capture the model's variables, which the
module tracks as one list; the Keras model object itself is not saved (Keras' own `track(model)`
export saves BERT-Base's weights twice, keras-team/keras#23553).
"""

from __future__ import annotations

import tensorflow as tf

from bert_tf.serving import forward

_CLS, _SEP = "[CLS]", "[SEP]"


def pair_lengths(len_a, len_b, budget):
    """How many tokens of text a and text b Google's `_truncate_seq_pair` keeps: int [B] each.

    Google pops the last token of the longer text (of b on a tie) until la + lb <= budget. So
    a short text is kept whole and the other gets the rest; two long ones split the budget, a
    getting the odd token: nb = min(lb, max(budget // 2, budget - la)), na = min(la, budget - nb).
    """
    keep_b = tf.minimum(len_b, tf.maximum(budget // 2, budget - len_a))
    return tf.minimum(len_a, budget - keep_b), keep_b


def _first(ids, n):
    """The first n[i] tokens of each row of a ragged [B, (T)]."""
    return tf.ragged.boolean_mask(ids, tf.ragged.range(ids.row_lengths()) < n[:, None])


def _column(value, batch, keep=None):
    """A ragged [B, (1)] column of `value` (rows where keep is False are empty)."""
    column = tf.fill([batch, 1], tf.cast(value, tf.int64))
    if keep is None:
        return tf.RaggedTensor.from_tensor(column)
    return tf.ragged.boolean_mask(column, keep[:, None])


def _dense_inputs(ids, segments):
    """Ragged [B, (T)] ids and segment ids -> the model's int32 [B, T_max] inputs."""
    return {"input_ids": tf.cast(ids.to_tensor(0), tf.int32),
            "input_mask": tf.cast(tf.ones_like(ids).to_tensor(0), tf.int32),
            "segment_ids": tf.cast(segments.to_tensor(0), tf.int32)}


class _Served(tf.Module):
    """What every served model holds: the tokenizer, the model's variables (tracked once), the
    special tokens' ids and the sequence length."""

    def __init__(self, model, tokenizer, max_seq_length: int, parallel_chains: int = 1,
                 name=None):
        super().__init__(name=name)
        if max_seq_length < 3:
            raise ValueError(f"max_seq_length {max_seq_length} must be at least 3")
        if parallel_chains < 1:
            raise ValueError(f"parallel_chains {parallel_chains} must be at least 1")
        self.tokenizer = tokenizer
        # The variables, in a list the checkpoint tracks; the Keras model stays out of the
        # object graph (reached through a closure), so no weight is written twice.
        self.model_variables = [v.value if hasattr(v, "value") else v for v in model.weights]
        num_labels = model.num_labels

        def call_model(features):
            # An empty batch (or a batch of windows with no text) never reaches the model:
            # reshapes inside it cannot infer sizes from empty tensors.
            def empty():
                shape = [0, num_labels] if len(model.outputs[0].shape) == 2 else \
                    [0, tf.shape(features["input_ids"])[1], num_labels]
                return {"logits": tf.zeros(shape, tf.float32)}

            # The inference forward pass over the model's variables (serving/forward.py: the
            # Keras model's maths in fused TensorFlow kernels, a classifier's last layer at
            # [CLS] only, the positions in `parallel_chains` chains for as many cores).
            return tf.cond(tf.size(features["input_ids"]) > 0,
                           lambda: {"logits": forward.logits(model, features, parallel_chains)},
                           empty)

        self._call_model = call_model
        missing = [t for t in (_CLS, _SEP) if t not in tokenizer.special_ids]
        if missing:
            raise ValueError(f"the vocabulary has no {' or '.join(missing)}: a BERT model's "
                             "inputs need both")
        self.cls_id, self.sep_id = tokenizer.special_ids[_CLS], tokenizer.special_ids[_SEP]
        self.max_seq_length = max_seq_length


class ClassifierModule(_Served):
    """A BertClassifier with its tokenizer: `text` and `text_pair` functions (module doc).

    model: a BertClassifier (float32 weights; its dtype policy should be float32); tokenizer: a
    GraphTokenizer; label_names: the output rows' names (ignored for regression);
    pair_task: whether serving_default takes text pairs; parallel_chains: the cores one request
    is built to use (module doc).
    """

    def __init__(self, model, tokenizer, label_names, max_seq_length: int = 128,
                 regression: bool = False, pair_task: bool = False, parallel_chains: int = 1,
                 name=None):
        super().__init__(model, tokenizer, max_seq_length, parallel_chains, name=name)
        self.regression = regression
        self.pair_task = pair_task
        self.label_names = tf.constant([str(n) for n in label_names] or [""])

    def _answer(self, ids, segments):
        logits = tf.cast(self._call_model(_dense_inputs(ids, segments))["logits"], tf.float32)
        if self.regression:
            return {"score": logits[:, 0]}
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {"probabilities": probabilities,
                "label": tf.gather(self.label_names, tf.argmax(probabilities, axis=-1))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def text_pair(self, text_a, text_b):
        """Raw text pairs [B], [B] -> probabilities [B, L] and label [B] (or score [B])."""
        batch = tf.shape(text_a)[0]
        # One tokenizer pass over both sides: its cost at batch 1 is mostly per call.
        both = self.tokenizer.tokenize(tf.concat([text_a, text_b], axis=0))
        a, b = both[:batch], both[batch:]
        has_b = b.row_lengths() > 0
        budget = tf.where(has_b, self.max_seq_length - 3, self.max_seq_length - 2)
        keep_a, keep_b = pair_lengths(a.row_lengths(), b.row_lengths(),
                                      tf.cast(budget, tf.int64))
        a, b = _first(a, keep_a), _first(b, keep_b)
        cls, sep = _column(self.cls_id, batch), _column(self.sep_id, batch)
        sep_b = _column(self.sep_id, batch, keep=has_b)
        ids = tf.concat([cls, a, sep, b, sep_b], axis=1)
        segments = tf.concat([tf.zeros_like(cls), tf.zeros_like(a), tf.zeros_like(sep),
                              tf.ones_like(b), tf.ones_like(sep_b)], axis=1)
        return self._answer(ids, segments)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a")])
    def text(self, text_a):
        """Raw texts [B] -> probabilities [B, L] and label [B] (or score [B])."""
        return self.text_pair(text_a, tf.fill(tf.shape(text_a), ""))

    def signatures(self) -> dict:
        text = self.text.get_concrete_function()
        pair = self.text_pair.get_concrete_function()
        return {"serving_default": pair if self.pair_task else text,
                "text": text, "text_pair": pair}


def _windows(counts, num_tokens, capacity):
    """Which window each token goes in, as Google-style tagging windows cut a long sentence:
    tokens in order, a new window when the next token's pieces would overflow `capacity`
    (bert_tf.data.conll's rule). counts int32 [B, T] (0-padded), num_tokens int32 [B] ->
    int32 [B, T] window index per token (0, 1, ...; padding's is meaningless)."""
    batch = tf.shape(counts)[0]
    tokens = tf.shape(counts)[1]
    counts = tf.pad(counts, [[0, 0], [0, 1]])  # one column more: the loop runs at least once

    def step(j, used, window, out):
        n = counts[:, j]
        valid = j < num_tokens
        new = valid & (used + n > capacity) & (used > 0)
        window += tf.cast(new, tf.int32)
        used = tf.where(new, 0, used) + tf.where(valid, n, 0)
        return j + 1, used, window, out.write(j, window)

    zeros = tf.zeros([batch], tf.int32)
    _, _, _, out = tf.while_loop(
        lambda j, *_: j < tf.shape(counts)[1], step,
        (0, zeros, zeros, tf.TensorArray(tf.int32, size=tf.shape(counts)[1])))
    return tf.transpose(out.stack(), [1, 0])[:, :tokens]


class TaggerModule(_Served):
    """A BertTokenClassifier (NER) with its tokenizer: `entities(text)`.

    The text's whitespace-delimited tokens are the model's words (CoNLL-2003's words: run_ner.py
    tokenizes each into word pieces and predicts a tag on its first piece), cut into windows of
    at most max_seq_length - 2 pieces at token boundaries as run_ner.py cuts long sentences.
    Entities are read from the tags with conlleval's rules (seqeval's default): an entity
    starts at B-X, or at I-X after O or after another type.

    Outputs (B texts, E the batch's most entities, T its most tokens; padding: "" / -1 / 0):
      entity_type  tf.string [B, E]   PER, ORG, ...
      entity_text  tf.string [B, E]   text[entity_start:entity_end]
      entity_start, entity_end int64 [B, E]   code point offsets (Python slicing)
      entity_score float32 [B, E]    mean over its tokens of the predicted tag's probability
      num_entities int64 [B]
      token_label  tf.string [B, T]   every token's tag;  token_start, token_end int64 [B, T]
      num_tokens   int64 [B]
    """

    def __init__(self, model, tokenizer, label_names, max_seq_length: int = 128,
                 parallel_chains: int = 1, name=None):
        super().__init__(model, tokenizer, max_seq_length, parallel_chains, name=name)
        labels = [str(n) for n in label_names]
        self.label_names = tf.constant(labels)
        types = sorted({n[2:] for n in labels if n != "O"})
        self.entity_types = tf.constant([""] + types)
        self.type_of_label = tf.constant(
            [0 if n == "O" else 1 + types.index(n[2:]) for n in labels], tf.int32)
        self.begins_entity = tf.constant([n.startswith("B-") for n in labels])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def entities(self, text):
        """Raw texts [B] -> entities and token tags (the class doc)."""
        capacity = self.max_seq_length - 2
        words, start, end, token = self.tokenizer.words_with_offsets(text)
        pieces = self.tokenizer.wordpieces(words)  # [B, (W), (P)]
        batch = tf.shape(text, out_type=tf.int64)[0]
        # Tokens: number them across the batch, gather their pieces and spans.
        row_of_word = words.value_rowids()
        tokens_per_row = tf.math.unsorted_segment_max(token.flat_values + 1, row_of_word, batch)
        tokens_per_row = tf.maximum(tokens_per_row, 0)
        first_token = tf.cumsum(tokens_per_row, exclusive=True)
        token_of_word = token.flat_values + tf.gather(first_token, row_of_word)
        num_tokens = tf.reduce_sum(tokens_per_row)
        token_of_piece = tf.gather(token_of_word, pieces.values.value_rowids())
        token_pieces = tf.RaggedTensor.from_value_rowids(pieces.flat_values, token_of_piece,
                                                         nrows=num_tokens)
        token_pieces = _first(token_pieces, tf.fill([num_tokens], tf.cast(capacity, tf.int64)))
        token_start = tf.math.segment_min(start.flat_values, token_of_word)
        token_end = tf.math.segment_max(end.flat_values, token_of_word)
        row_of_token = tf.repeat(tf.range(batch), tokens_per_row)
        # Windows of at most `capacity` pieces, then one model input sequence per window.
        counts = tf.RaggedTensor.from_row_lengths(
            tf.cast(token_pieces.row_lengths(), tf.int32), tokens_per_row)
        window = tf.RaggedTensor.from_tensor(
            _windows(counts.to_tensor(0), tf.cast(tokens_per_row, tf.int32), capacity),
            lengths=tokens_per_row).flat_values
        windows_per_row = tf.math.unsorted_segment_max(window + 1, row_of_token, batch)
        windows_per_row = tf.cast(tf.maximum(windows_per_row, 0), tf.int64)
        sequence = tf.cast(window, tf.int64) + tf.gather(
            tf.cumsum(windows_per_row, exclusive=True), row_of_token)
        num_sequences = tf.reduce_sum(windows_per_row)
        ids = tf.RaggedTensor.from_value_rowids(
            token_pieces.flat_values, tf.gather(sequence, token_pieces.value_rowids()),
            nrows=num_sequences)
        n = tf.shape(ids.row_lengths())[0]
        ids = tf.concat([_column(self.cls_id, n), ids, _column(self.sep_id, n)], axis=1)
        logits = self._call_model(_dense_inputs(ids, tf.zeros_like(ids)))["logits"]
        # Each token's tag is read at its first piece: 1 + the pieces before it in its window.
        before = tf.cumsum(token_pieces.row_lengths(), exclusive=True)
        position = before - tf.gather(tf.math.segment_min(before, sequence), sequence) + 1
        token_logits = tf.gather_nd(tf.cast(logits, tf.float32),
                                    tf.stack([sequence, position], axis=1))
        probabilities = tf.nn.softmax(token_logits, axis=-1)
        label = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        score = tf.reduce_max(probabilities, axis=-1)
        return self._chunks(text, label, score, token_start, token_end, row_of_token,
                            tokens_per_row, batch)

    def _chunks(self, text, label, score, token_start, token_end, row_of_token,
                tokens_per_row, batch):
        kind = tf.gather(self.type_of_label, label)
        inside = kind > 0
        previous = tf.concat([[0], kind[:-1]], 0)
        first = tf.concat([[True], row_of_token[1:] != row_of_token[:-1]], 0)[:tf.size(kind)]
        begins = inside & (tf.gather(self.begins_entity, label) | first | (previous != kind))
        members = tf.squeeze(tf.where(inside), 1)
        entity = tf.gather(tf.cumsum(tf.cast(begins, tf.int64)) - 1, members)
        heads = tf.squeeze(tf.where(begins), 1)
        entity_row = tf.gather(row_of_token, heads)
        e_start = tf.math.segment_min(tf.gather(token_start, members), entity)
        e_end = tf.math.segment_max(tf.gather(token_end, members), entity)
        e_text = tf.strings.substr(tf.gather(text, entity_row), e_start, e_end - e_start,
                                   unit="UTF8_CHAR")
        e_score = tf.math.segment_mean(tf.gather(score, members), entity)
        e_type = tf.gather(self.entity_types, tf.gather(kind, heads))

        def padded(values, rows, nrows, fill):
            return tf.RaggedTensor.from_value_rowids(values, rows, nrows=nrows).to_tensor(fill)

        return {
            "entity_type": padded(e_type, entity_row, batch, ""),
            "entity_text": padded(e_text, entity_row, batch, ""),
            "entity_start": padded(e_start, entity_row, batch, -1),
            "entity_end": padded(e_end, entity_row, batch, -1),
            "entity_score": padded(e_score, entity_row, batch, 0.0),
            "num_entities": tf.math.bincount(entity_row, minlength=batch, maxlength=batch,
                                             dtype=tf.int64),
            "token_label": padded(tf.gather(self.label_names, label), row_of_token, batch, ""),
            "token_start": padded(token_start, row_of_token, batch, -1),
            "token_end": padded(token_end, row_of_token, batch, -1),
            "num_tokens": tokens_per_row,
        }

    def signatures(self) -> dict:
        entities = self.entities.get_concrete_function()
        return {"serving_default": entities, "entities": entities}


def save(module: _Served, export_dir: str) -> str:
    """Write `module` as a SavedModel into export_dir (made; an existing one is replaced only
    once the new one is complete). Returns export_dir."""
    import os
    import shutil

    export_dir = os.path.abspath(export_dir)
    partial = export_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    tf.saved_model.save(module, partial, signatures=module.signatures())
    if os.path.exists(export_dir):
        shutil.rmtree(export_dir)
    os.replace(partial, export_dir)
    return export_dir
