"""ARCHITECTURE.md in code: every import of the package goes down the layers or stays in one
(imports inside functions count), and the public names outside code relies on still import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO

# Layer of each part of bert_tf, as ARCHITECTURE.md's table gives them (5: entry points ... 0).
LAYERS = {
    "bert_tf.tune": 5, "bert_tf.azure_ml": 5, "bert_tf.glue": 5,
    "bert_tf.finetune": 4, "bert_tf.qa": 4, "bert_tf.pretrain": 4, "bert_tf.extract": 4,
    "bert_tf.vocab_building": 4, "bert_tf.vocab_extension": 4, "bert_tf.flags": 4,
    "bert_tf.cli": 4, "bert_tf.sweeps": 4, "bert_tf.export": 4,
    "bert_tf.training": 3, "bert_tf.serving": 3,
    "bert_tf.checkpoints": 2, "bert_tf.assets": 2,
    "bert_tf.data": 1,
    "bert_tf.modeling": 0, "bert_tf.tokenization": 0, "bert_tf.config": 0, "bert_tf.metrics": 0,
    "bert_tf.downloads": 0, "bert_tf.errors": 0, "bert_tf": 0,
}


def layer_of(module: str) -> int:
    """The layer of the longest LAYERS entry that `module` is or lies under."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise KeyError(f"{module}: not in ARCHITECTURE.md's layers (add it to the table and here)")


def package_modules():
    for path in sorted((REPO / "bert_tf").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


def imported_modules(path: Path, module: str):
    """(line, module) for every bert_tf import in the file, at any depth (lazy ones too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the package
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                # `from bert_tf import data` imports the module bert_tf.data
                yield node.lineno, (f"{base}.{alias.name}" if base == "bert_tf" else base)


def test_every_import_goes_down_the_layers_or_stays_in_its_own():
    upward = []
    modules = dict(package_modules())
    assert len(modules) > 50
    for module, path in modules.items():
        own = layer_of(module)
        for line, target in imported_modules(path, module):
            if target.split(".")[0] != "bert_tf":
                continue
            if layer_of(target) > own:
                upward.append(f"{path.relative_to(REPO)}:{line} (layer {own}) imports {target} "
                              f"(layer {layer_of(target)})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself: a data module importing the training loop is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bert_tf.training.loop import train\n")
    found = [(line, target) for line, target in imported_modules(bad, "bert_tf.data.bad")]
    assert found == [(2, "bert_tf.training.loop")]
    assert layer_of("bert_tf.training.loop") > layer_of("bert_tf.data.bad")


def test_the_layers_table_names_every_module_and_the_architecture_page_names_every_layer():
    for module, _ in package_modules():
        layer_of(module)  # KeyError names a module the table misses
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for part in LAYERS:
        if part != "bert_tf":
            path = part.replace(".", "/")
            assert f"`{path}/`" in text or f"`{path}.py`" in text or \
                f"`{part.rsplit('.', 1)[-1]}.py`" in text, f"ARCHITECTURE.md does not name {part}"


# The public API (../shared/DESIGN.md) and the names moved when tune.py, azure/submit.py,
# data/pretraining.py and the loop were split, imported from where outside code imports them.
PUBLIC = {
    "bert_tf": ["BertConfig"],
    "bert_tf.modeling": ["BertEncoder", "BertPretrainer", "BertClassifier",
                         "BertTokenClassifier"],
    "bert_tf.checkpoints": ["load", "save", "save_google", "save_huggingface", "find_assets",
                            "CheckpointError"],
    "bert_tf.tokenization": ["FullTokenizer"],
    "bert_tf.tune": ["main", "TrialRecord", "write_report", "BanditPruner", "open_study",
                     "read_curves", "best_trial"],
    "bert_tf.sweeps": ["load", "SweepSpec", "SweepError", "Bandit", "check_script_args"],
    "bert_tf.data.pretraining": ["create_pretraining_data", "PretrainingOptions", "ShardWriter",
                                 "PRETRAINING_SCHEMA", "feature_lengths", "read_documents",
                                 "expand_input_files", "output_paths", "VocabIds"],
    "bert_tf.assets": ["UsageError", "resolve_model_assets"],
    "bert_tf.training.loop": ["train", "TrainSettings", "TrainingError", "checkpoint_dir",
                              "evaluate", "predict"],
    "bert_tf.tokenization.graph": ["GraphTokenizer"],
    "bert_tf.serving.saved_model": ["ClassifierModule", "TaggerModule", "save"],
    "bert_tf.export": ["export_classifier", "export_tagger", "export_model", "ExportArgs"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_still_import(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if getattr(imported, name, None) is None]
    assert not missing, f"{module} lacks {missing}"
