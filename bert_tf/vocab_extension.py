"""extend_vocab.py's work: new tokens (given, or proposed from a corpus) placed in an existing
checkpoint's vocabulary and its weights resized to match. The token rules are in
`bert_tf.tokenization.extension`, the tensor rewriting in `bert_tf.checkpoints.extend`."""

from __future__ import annotations

import dataclasses
import json
import os

from bert_tf.errors import UsageError


@dataclasses.dataclass
class ExtendArgs:
    init_checkpoint: str
    output_dir: str | None = None
    vocab_file: str | None = None
    new_tokens: list = dataclasses.field(default_factory=list)
    new_tokens_file: str | None = None
    corpus_file: str | None = None
    num_new_tokens: int = 100
    min_frequency: int = 20
    mode: str = "auto"
    do_lower_case: bool | None = None
    dry_run: bool = False
    overwrite_output: bool = False


def guess_lower_case(tokens: list[str]) -> bool:
    """Uncased when no token outside `[...]` has an upper-case letter (Google's uncased
    vocabularies have none; its cased ones have thousands)."""
    return not any(t != t.lower() for t in tokens if not (t.startswith("[") and t.endswith("]")))


def extend_vocab(args: ExtendArgs) -> dict:
    """Plans the new rows and (unless dry_run) writes the extended checkpoint. Returns the
    summary (also written as OUTPUT_DIR/extension.json): old and new size, and per token its
    id, today's pieces and (when proposed) its corpus count."""
    from bert_tf.checkpoints import find_assets
    from bert_tf.tokenization import extension
    from bert_tf.tokenization.wordpiece import vocab_tokens

    assets = find_assets(args.init_checkpoint)
    vocab_file = args.vocab_file or assets.vocab_file
    if not vocab_file:
        raise UsageError(f"--init_checkpoint={args.init_checkpoint} has no vocab.txt beside "
                         "it: pass --vocab_file")
    try:
        old_tokens = vocab_tokens(vocab_file)
    except ValueError as e:  # not UTF-8, empty
        raise UsageError(f"--vocab_file: {e}") from None
    do_lower_case = args.do_lower_case
    if do_lower_case is None:
        do_lower_case = assets.do_lower_case if assets.do_lower_case is not None else \
            guess_lower_case(old_tokens)
    wanted, proposed = _wanted_tokens(args, old_tokens, do_lower_case)
    try:
        plan = extension.plan(old_tokens, wanted, args.mode, do_lower_case)
    except ValueError as e:  # tokens refused, no unused lines left: the message says which
        raise UsageError(str(e)) from None
    counts = {p["token"]: p["count"] for p in proposed}
    summary = {"init_checkpoint": args.init_checkpoint, "vocab_file": vocab_file,
               "do_lower_case": do_lower_case, "mode": args.mode,
               "old_size": plan.old_size, "new_size": len(plan.tokens),
               "replaced": len(plan.replaced), "appended": plan.appended,
               "tokens": [dict({"token": t, "id": plan.rows[t], "pieces": plan.pieces[t]},
                               **({"count": counts[t]} if t in counts else {}))
                          for t in plan.rows]}
    if args.dry_run:
        return summary
    _check_output(args, assets.checkpoint)
    from bert_tf.checkpoints.extend import extend_checkpoint

    old_ids = {t: i for i, t in enumerate(old_tokens)}
    report = extend_checkpoint(assets.checkpoint or args.init_checkpoint, args.output_dir,
                               plan, old_ids)
    summary.update(format=report["format"], resized=report["resized"],
                   copied_unchanged=report["copied"], training_state_dropped=report["dropped"])
    summary["summary_file"] = os.path.join(args.output_dir, "extension.json")
    with open(summary["summary_file"], "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return summary


def _wanted_tokens(args: ExtendArgs, old_tokens: list[str], do_lower_case: bool):
    wanted = list(args.new_tokens)
    if args.new_tokens_file:
        try:
            with open(args.new_tokens_file, encoding="utf-8-sig") as f:
                wanted += [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise UsageError(f"--new_tokens_file={args.new_tokens_file}: not UTF-8 text "
                             f"(byte {e.start})") from None
    proposed = []
    if args.corpus_file:
        from bert_tf.data.pretraining import expand_input_files
        from bert_tf.tokenization.extension import propose
        from bert_tf.vocab_building import sampled_lines

        lines = sampled_lines(expand_input_files(args.corpus_file), 1 << 30)
        proposed = propose(lines, old_tokens, do_lower_case, args.num_new_tokens,
                           args.min_frequency)
        wanted += [p["token"] for p in proposed if p["token"] not in wanted]
    return wanted, proposed


def _check_output(args: ExtendArgs, checkpoint: str | None) -> None:
    out = args.output_dir
    source = checkpoint if checkpoint and os.path.isdir(checkpoint) else \
        os.path.dirname(checkpoint or args.init_checkpoint)
    if os.path.abspath(out) == os.path.abspath(source):
        raise UsageError(f"--output_dir={out} is the checkpoint's own folder; write the "
                         "extended checkpoint elsewhere")
    if os.path.isdir(out) and os.listdir(out) and not args.overwrite_output:
        raise UsageError(f"--output_dir={out} is not empty; pass --overwrite_output or choose "
                         "another folder")
