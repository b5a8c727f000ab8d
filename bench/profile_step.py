"""The profiling tool: where a pre-training step's time goes, and A/B timings of its pieces.

    python bench/profile_step.py trace    [...]   TF profiler traces of bert_tf's and Model Garden's
                                             step, summed by function, model part and op kind
    python bench/profile_step.py kernels  [...]   each hand-written form (Dense, LayerNorm, GELU,
                                             dropout, the tied decoder, the MLM loss) against
                                             the stock form: values, gradients, time
    python bench/profile_step.py pieces   [...]   A/B timings of pieces of the step (decoder, update,
                                             last layer, ...), alternated in one process
    python bench/profile_step.py trees    [...]   the whole step from two source trees or
                                             environments, side by side (A/B of a change)

`python bench/profile_step.py COMMAND --help` gives each one's flags; bench/README.md the runs made
with them. The benchmarks users rerun against peers are the bench_*.py scripts beside this one.
"""

from __future__ import annotations

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = {"trace": "profiling.trace", "kernels": "profiling.kernels",
            "pieces": "profiling.pieces", "trees": "profiling.trees"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sys.path.insert(0, HERE)
    module = importlib.import_module(COMMANDS[argv[0]])
    sys.argv = [f"bench/profile_step.py {argv[0]}", *argv[1:]]
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
