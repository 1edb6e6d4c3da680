"""BERT-family encoders, poolers and checkpoint loading."""
from sentjax.models.bert import BertEncoder
from sentjax.models.config import ConfigError, EncoderConfig
from sentjax.models.pooling import POOLING_MODES, Pooler
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn

__all__ = ["BertEncoder", "ConfigError", "EncoderConfig", "POOLING_MODES", "Pooler",
           "SentenceEncoderModule", "embed_fn"]
