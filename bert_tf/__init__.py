"""bert_tf: BERT pre-training and fine-tuning on TensorFlow 2 / Keras 3.

`import bert_tf` stays light (no TensorFlow import); the submodules `bert_tf.modeling`,
`bert_tf.checkpoints`, `bert_tf.tokenization` load what they need.
"""

from bert_tf.config import BertConfig, ConfigError

__version__ = "0.1.0"
__all__ = ["BertConfig", "ConfigError", "__version__"]
