"""Shared fixtures: the real data folder, tiny configs, quiet TensorFlow."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("BERT_TF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts) -> pathlib.Path:
    """A path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set BERT_TF_SHARED_DATA to the folder "
                    "holding the shared data sets)")
    return path


@pytest.fixture
def shared_data():
    return shared


def tiny_config(**overrides):
    from bert_tf import BertConfig

    values = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                  hidden_act="gelu")
    values.update(overrides)
    return BertConfig(**values)


def random_batch(config, batch=3, seq=12, predictions=4, seed=0, pad=True):
    """int32 features with real padding (later positions masked off in some rows)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (batch, seq)).astype("int32")
    mask = np.ones((batch, seq), "int32")
    if pad:
        for row in range(1, batch):
            mask[row, seq - 3 * row:] = 0
    ids = ids * mask
    segments = np.zeros((batch, seq), "int32")
    segments[:, seq // 2:] = 1
    segments *= mask
    positions = np.stack([rng.choice(seq // 2, predictions, replace=False)
                          for _ in range(batch)]).astype("int32")
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
            "masked_lm_positions": positions}


def random_feature_table(n=96, seed=0, vocab=99, max_len=48, table_len=None):
    """A records.FeatureTable of n random single-segment rows of 4..max_len-1 ids, labelled by
    whether the second id is in the upper half of the vocabulary (learnable, for smoke runs)."""
    import numpy as np

    from bert_tf.data import records

    rng = np.random.default_rng(seed)
    feats = []
    for _ in range(n):
        length = int(rng.integers(4, max_len))
        ids = rng.integers(5, vocab, length).tolist()
        feats.append(dict(input_ids=ids, input_mask=[1] * length, segment_ids=[0] * length,
                          label_ids=int(ids[1] > vocab // 2)))
    return records.FeatureTable.from_features(feats, table_len or max_len + 16)
