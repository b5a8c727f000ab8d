"""The BERT model in pure Keras 3 (no tf.* calls: runs under any Keras backend)."""

from bert_tf.modeling.encoder import BertEncoder
from bert_tf.modeling.heads import (ClassificationHead, MaskedLMHead, NextSentenceHead,
                                    SpanHead, TokenClassificationHead)
from bert_tf.modeling.models import (BertClassifier, BertPretrainer, BertSpanExtractor,
                                     BertTokenClassifier)

__all__ = ["BertEncoder", "BertPretrainer", "BertClassifier", "BertTokenClassifier",
           "BertSpanExtractor", "MaskedLMHead", "NextSentenceHead", "ClassificationHead",
           "TokenClassificationHead", "SpanHead"]
