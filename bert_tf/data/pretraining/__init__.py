"""Pre-training data: documents -> instances -> TFRecords, streaming, multi-process, TF-free.

A stage a module, each testable alone:

    options.py    the options (Google's flags), the record schema, the vocabulary's ids
    documents.py  reading text: files -> documents, paragraphs -> sentences
    instances.py  making instances: documents -> sentence pairs over a bounded window
    masking.py    masking: a batch of instances -> Google's features, vectorised
    shards.py     writing one shard: masked batches, the global shuffle, the record index
    pool.py       the worker pool and the run: dispatch, commit, cleanup, summary

The semantics are those of google-research/bert's create_pretraining_data.py: one sentence a
line, blank lines between documents; Google's `create_instances_from_document` (segments
accumulated up to a target length, A = a random number of leading segments, B the actual
continuation or, with probability 1/2 and always for a one-segment chunk, a random span of
another document), `truncate_seq_pair` and `create_masked_lm_predictions` (15% of the
non-special tokens, whole words optionally, 80% [MASK] / 10% kept / 10% random), and Google's
features and dtypes (`PRETRAINING_SCHEMA`).

What differs from Google's script, which reads the whole corpus into one process:

* Streaming. The main process reads the input line by line and sends raw document text, in
  batches, over bounded queues to `num_workers` worker processes (spawned: they never import
  TensorFlow; they tokenize with `CachedTokenizer` and write with `tfrecord`).
* Sharding fixes the output. Document k (counting non-empty documents in input order) belongs
  to output shard k % num_output_shards, and shard s is processed entirely by worker
  s % num_workers, with its own random state seeded from (random_seed, s). So the output is a
  function of the inputs, the options and num_output_shards alone: 1 or 8 workers write
  byte-identical shards.
* Bounded memory. Per shard, a worker holds
  - a window of `document_window` (64) recent documents to draw random next segments from (Google
    draws from the whole corpus). A document is processed once `document_window // 2` later
    documents of its shard have arrived, so the random document comes from either side of it.
    Processed documents also leave the window while it holds more than `window_tokens`
    WordPieces (~36 bytes each as Python lists), so a corpus of books stays bounded too;
    The documents waiting for their lookahead are capped too: once they hold more than
    `window_tokens // 2` WordPieces the oldest is processed early, so book-length documents
    cannot pile up in the lookahead either.
  - at most `shuffle_buffer` serialised instances (~700 bytes each at max_seq_length 128).
* A global shuffle in bounded memory. Google shuffles all instances of the corpus before
  writing; a bounded buffer cannot, and a file written through one runs through the corpus
  topic by topic. So a shard that outgrows `shuffle_buffer` instances spills them, each to one
  of `SHUFFLE_BUCKETS` temporary files chosen uniformly at random (`NAME.partial.shuffle/`);
  at the end each bucket is read back, shuffled in memory and appended to the shard, in bucket
  order (a bucket larger than `shuffle_buffer` is split the same way again first). Random
  buckets, each uniformly shuffled, make every order of the shard's instances equally likely,
  as Google's in-memory shuffle does, at the cost of writing and reading every record once more
  (temporary disk: the shard's size). A shard that fits in the buffer never touches the disk.
  The `dupe_factor` copies of a document (different masks and pairings) are made when the
  document is processed, not in `dupe_factor` passes over the corpus.
* Crash safety. Shards are written as `NAME.partial` and renamed when every worker has
  finished; on an error, Ctrl-C or SIGTERM the workers are stopped and the partial files
  removed. After a kill -9 the workers notice their parent is gone and exit, and the next run
  removes the leftover `.partial` files and shuffle folders before it starts (never appending
  to them). Shards of an earlier run under the same name with another shard count are refused
  without `--overwrite_output`, and removed with it once the new shards are in place (only
  those the earlier run's summary lists; look-alikes are refused and kept), so a glob over the
  output never mixes two runs.
* `dynamic_masking=True` writes only input_ids, input_mask, segment_ids and
  next_sentence_labels: the training pipeline draws masks itself.

Random draws: instance creation uses Python's `random.Random` scalar draws; masking is
vectorised with numpy over batches of `MASK_BATCH` instances of one shard. The draws differ
from Google's (so do the shards), the distributions do not; truncation draws the number of
front deletions as one binomial instead of a coin per deleted token.
"""

from bert_tf.data.pretraining.documents import (expand_input_files, read_documents,
                                                split_sentences)
from bert_tf.data.pretraining.instances import InstanceMaker, truncate_seq_pair
from bert_tf.data.pretraining.masking import instance_features, mask_tokens
from bert_tf.data.pretraining.options import (CLS_TOKEN, DYNAMIC_MASKING_FEATURES, INPUT_FORMATS,
                                              MASK_TOKEN, PRETRAINING_SCHEMA, SEP_TOKEN,
                                              PretrainingOptions, VocabIds, feature_lengths,
                                              vocab_ids)
from bert_tf.data.pretraining.pool import (Interrupted, create_pretraining_data, output_paths,
                                           summary_path)
from bert_tf.data.pretraining.shards import MASK_BATCH, SHUFFLE_BUCKETS, ShardWriter

__all__ = ["expand_input_files", "read_documents", "split_sentences", "InstanceMaker",
           "truncate_seq_pair", "instance_features", "mask_tokens", "CLS_TOKEN",
           "DYNAMIC_MASKING_FEATURES", "INPUT_FORMATS", "MASK_TOKEN", "PRETRAINING_SCHEMA",
           "SEP_TOKEN", "PretrainingOptions", "VocabIds", "feature_lengths", "vocab_ids",
           "Interrupted", "create_pretraining_data", "output_paths", "summary_path",
           "MASK_BATCH", "SHUFFLE_BUCKETS", "ShardWriter"]
