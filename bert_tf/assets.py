"""Resolve and cross-check what a script needs before it builds a model: config, vocabulary,
checkpoint and casing. Every check here is one a user has lost a day to (a vocabulary that does
not match the embedding table gives silent NaNs or garbage, not an error)."""

from __future__ import annotations

import dataclasses
import logging
import os

from bert_tf.config import BertConfig
from bert_tf.errors import UsageError

logger = logging.getLogger("bert_tf")

__all__ = ["ModelAssets", "UsageError", "count_vocab", "resolve_model_assets"]


@dataclasses.dataclass
class ModelAssets:
    config: BertConfig
    vocab_file: str | None  # None only when resolved with vocab_required=False
    do_lower_case: bool
    init_checkpoint: str | None
    config_file: str


def count_vocab(path: str) -> int:
    """Ids the vocabulary file defines, counted as the tokenizer assigns them (every line is
    one id, whatever it holds: `tokenization.wordpiece.vocab_tokens`)."""
    from bert_tf.tokenization.wordpiece import vocab_size

    try:
        return vocab_size(path)
    except ValueError as e:
        raise UsageError(f"--vocab_file={path}: {e}") from None


def resolve_model_assets(init_checkpoint=None, bert_config_file=None, vocab_file=None,
                         do_lower_case=True, do_lower_case_given=False,
                         max_seq_length=None, vocab_required: bool = True) -> ModelAssets:
    """Fill bert_config_file / vocab_file / do_lower_case from the checkpoint's directory (or
    preset) when not given, then check they agree with each other and with max_seq_length.

    vocab_required=False (pre-training on records, which hold ids already): no vocabulary is
    not an error, and ModelAssets.vocab_file is None."""
    from bert_tf.checkpoints import find_assets

    assets = find_assets(init_checkpoint) if init_checkpoint else None
    if assets and not (os.path.exists(assets.checkpoint) or
                       os.path.exists(assets.checkpoint + ".index")):
        from bert_tf.checkpoints.presets import PRESETS
        raise UsageError(
            f"--init_checkpoint={init_checkpoint}: no such file, directory or checkpoint prefix "
            f"(nor {init_checkpoint}.index), and not a preset name. Pass a Google checkpoint "
            "prefix (.../bert_model.ckpt), a Hugging Face directory or .safetensors file, a "
            f"bert_tf checkpoint, or one of: {', '.join(sorted(PRESETS))}")
    if init_checkpoint and assets.checkpoint != init_checkpoint:
        logger.info("preset %s resolved to %s", init_checkpoint, assets.checkpoint)
    checkpoint = assets.checkpoint if assets else None

    config_file = bert_config_file or (assets.config_file if assets else None)
    if not config_file:
        raise UsageError("--bert_config_file is required (or an --init_checkpoint directory "
                         "that holds bert_config.json or config.json)")
    vocab = vocab_file or (assets.vocab_file if assets else None)
    if not vocab and not vocab_required:
        config = BertConfig.from_json_file(config_file)
        _check_max_seq_length(max_seq_length, config, config_file)
        return ModelAssets(config=config, vocab_file=None, do_lower_case=do_lower_case,
                           init_checkpoint=checkpoint, config_file=config_file)
    if not vocab:
        raise UsageError("--vocab_file is required (or an --init_checkpoint directory that holds "
                         "vocab.txt)")
    if not os.path.exists(vocab):
        raise UsageError(f"--vocab_file={vocab}: file not found")
    config = BertConfig.from_json_file(config_file)

    if not do_lower_case_given and assets and assets.do_lower_case is not None:
        do_lower_case = bool(assets.do_lower_case)
    from bert_tf.tokenization import check_do_lower_case
    try:
        check_do_lower_case(do_lower_case, init_checkpoint)
    except ValueError as e:
        raise UsageError(str(e)) from None

    n_vocab = count_vocab(vocab)
    if n_vocab != config.vocab_size:
        from bert_tf.tokenization.wordpiece import vocab_tokens

        tokens = vocab_tokens(vocab)
        empty_tail = next((i for i, token in enumerate(reversed(tokens)) if token), len(tokens))
        hint = (f" (its last {empty_tail} line(s) are empty: every line is an entry, as in "
                "Google's loader; remove the trailing blank line)" if empty_tail and
                n_vocab - empty_tail == config.vocab_size else "")
        source = f"--vocab_file={vocab}" if vocab_file else f"{vocab} (next to the checkpoint)"
        raise UsageError(
            f"{source} has {n_vocab} entries{hint} but {config_file} says vocab_size "
            f"{config.vocab_size}: a vocabulary that does not match the embedding table gives "
            "wrong ids (NaNs or garbage). Use the vocab.txt that came with the checkpoint (or fix "
            "vocab_size when training from scratch)")
    _check_max_seq_length(max_seq_length, config, config_file)
    return ModelAssets(config=config, vocab_file=vocab, do_lower_case=do_lower_case,
                       init_checkpoint=checkpoint, config_file=config_file)


def _check_max_seq_length(max_seq_length, config: BertConfig, config_file: str) -> None:
    if max_seq_length is None:
        return
    if max_seq_length > config.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length={max_seq_length} exceeds max_position_embeddings "
            f"{config.max_position_embeddings} of {config_file}: lower --max_seq_length")
    if max_seq_length < 3:
        raise UsageError(f"--max_seq_length={max_seq_length}: need room for [CLS], [SEP] "
                         "and at least one token")
