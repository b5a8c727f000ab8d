"""Making instances: the documents of one shard -> (tokens_a, tokens_b, is_random_next) pairs,
Google's create_instances_from_document and truncate_seq_pair over a bounded window of
documents (the random next segment comes from the window, not the whole corpus)."""

from __future__ import annotations

import collections
import random
from typing import Callable

from bert_tf.data.pretraining.options import PretrainingOptions

Instance = tuple  # (tokens_a: list[int], tokens_b: list[int], is_random_next: bool)


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int,
                      rng: random.Random) -> tuple[list, list, int]:
    """Google's truncate_seq_pair in closed form: -> (a, b, tokens removed).

    Google removes one token at a time from the longer side (B on a tie), from the front or
    the back with probability 1/2 each. The count taken from each side follows from the
    lengths alone; the fronts taken are one binomial draw per side.
    """
    la, lb = len(tokens_a), len(tokens_b)
    excess = la + lb - max_num_tokens
    if excess <= 0:
        return tokens_a, tokens_b, 0
    # Trim the longer side down to the shorter, then alternately (B first, as on a tie).
    head = min(excess, abs(la - lb))
    rest = excess - head
    from_a = rest // 2 + (head if la > lb else 0)
    from_b = rest - rest // 2 + (head if la <= lb else 0)
    if from_a:
        front = bin(rng.getrandbits(from_a)).count("1")
        tokens_a = tokens_a[front:la - (from_a - front)]
    if from_b:
        front = bin(rng.getrandbits(from_b)).count("1")
        tokens_b = tokens_b[front:lb - (from_b - front)]
    return tokens_a, tokens_b, excess


class InstanceMaker:
    """Documents of one shard, in order -> instances, handed to `sink` in batches.

    add_document(doc), doc = a list of sentences, each a non-empty list of token ids; flush()
    at the end. A document is made into instances (`dupe_factor` times) once
    `document_window // 2` later documents have arrived, so its random next segments come from
    either side of it, or earlier when the waiting documents hold more than `window_tokens // 2`
    WordPieces. Processed documents leave the window beyond `document_window` documents or
    `window_tokens` WordPieces. After each document, once `batch_size` instances are waiting,
    sink(all of them) is called (the batch boundaries order the masking draws); flush() hands
    over the rest. `counts` (shared with the caller) gains documents, sentences, tokens and
    truncation counts.
    """

    def __init__(self, options: PretrainingOptions, rng: random.Random, counts: dict,
                 sink: Callable[[list], None], batch_size: int):
        self.options = options
        self.rng = rng
        self.counts = counts
        self.sink = sink
        self.batch_size = batch_size
        self.window: collections.deque = collections.deque()
        self.window_tokens = 0  # WordPieces in the window
        self.pending = 0  # the newest `pending` documents of the window are not processed yet
        self.pending_tokens = 0  # WordPieces in those
        self.lookahead = options.document_window // 2
        self.instances: list[Instance] = []

    def add_document(self, document: list[list[int]]) -> None:
        if not document:
            return
        self.counts["documents"] += 1
        self.counts["sentences"] += len(document)
        tokens = sum(map(len, document))
        self.counts["tokens"] += tokens
        self.window_tokens += tokens
        if len(document) > 1:
            self.counts["multi_sentence_documents"] += 1
        self.window.append(document)
        self.pending += 1
        self.pending_tokens += tokens
        # Process the oldest waiting document once it has its lookahead, or early when the
        # waiting documents hold too many WordPieces (long documents).
        while self.pending > self.lookahead or (
                self.pending > 1 and self.pending_tokens > self.options.window_tokens // 2):
            self._process(len(self.window) - self.pending)

    def flush(self) -> None:
        """Processes the documents still waiting for their lookahead; hands over the rest."""
        while self.pending:
            self._process(len(self.window) - self.pending)
        self._hand_over()

    def _hand_over(self) -> None:
        batch, self.instances = self.instances, []
        if batch:
            self.sink(batch)

    def _process(self, index: int) -> None:
        self.pending -= 1
        self.pending_tokens -= sum(map(len, self.window[index]))
        for _ in range(self.options.dupe_factor):
            self._instances_from_document(index)
        if len(self.instances) >= self.batch_size:
            self._hand_over()
        # Older documents leave the window once it is full; the pending ones (the newest) and
        # the one just processed stay.
        window, options = self.window, self.options
        while len(window) > self.pending + 1 and (len(window) > options.document_window or
                                                   self.window_tokens > options.window_tokens):
            self.window_tokens -= sum(map(len, window.popleft()))

    def _instances_from_document(self, index: int) -> None:
        """Google's create_instances_from_document for window[index], into self.instances."""
        window, rng, counts = self.window, self.rng, self.counts
        document = window[index]
        max_num_tokens = self.options.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
        # Usually fill the sequence; sometimes (short_seq_prob) aim shorter, to look more like
        # fine-tuning inputs. Drawn once per document, as Google does.
        target_seq_length = max_num_tokens
        if rng.random() < self.options.short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)
        chunk: list[list[int]] = []
        length = 0
        i = 0
        n = len(document)
        while i < n:
            segment = document[i]
            chunk.append(segment)
            length += len(segment)
            if i == n - 1 or length >= target_seq_length:
                # A is the first a_end segments of the chunk.
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = []
                for sentence in chunk[:a_end]:
                    tokens_a += sentence
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    tokens_b = self._random_next(index, target_seq_length - len(tokens_a))
                    # The chunk's unused segments go back, to start the next chunk.
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = []
                    for sentence in chunk[a_end:]:
                        tokens_b += sentence
                tokens_a, tokens_b, removed = truncate_seq_pair(
                    tokens_a, tokens_b, max_num_tokens, rng)
                if removed:
                    counts["truncated_instances"] += 1
                    counts["truncated_tokens"] += removed
                self.instances.append((tokens_a, tokens_b, is_random_next))
                chunk = []
                length = 0
            i += 1

    def _random_next(self, index: int, target_b_length: int) -> list[int]:
        """B of a random-next instance: sentences of a random other document of the window,
        from a random one on, up to target_b_length tokens."""
        rng = self.rng
        other = self.window[self._random_document(index)]
        tokens_b: list[int] = []
        for j in range(rng.randint(0, len(other) - 1), len(other)):
            tokens_b += other[j]
            if len(tokens_b) >= target_b_length:
                break
        return tokens_b

    def _random_document(self, index: int) -> int:
        """A uniformly random other document of the window (itself if it is alone)."""
        n = len(self.window)
        if n == 1:
            return index
        other = self.rng.randrange(n - 1)
        return other + (other >= index)
