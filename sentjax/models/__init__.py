"""Encoder families (registered by HF model_type), poolers, checkpoint loading and saving.

Layout: ``registry`` (families by model_type), one module per family (``bert``, ``mpnet``), ``hf_weights``
(checkpoint <-> params through a family's name map), ``pooling``, ``sentence_model`` (encoder +
pooler), ``api`` (load / save / encode), ``build`` (what a run config builds: model, teacher,
vocabulary transfer), ``bundled`` (models of the optional extras), ``vocab_transfer``.
"""
from sentjax.errors import ConfigError
from sentjax.models.bert import BertEncoder, EncoderConfig
from sentjax.models.pooling import POOLING_MODES, Pooler
from sentjax.models.registry import EncoderFamily, get_encoder, register_encoder, supported_model_types
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn

__all__ = ["BertEncoder", "ConfigError", "EncoderConfig", "EncoderFamily", "POOLING_MODES", "Pooler",
           "SentenceEncoderModule", "embed_fn", "get_encoder", "register_encoder",
           "supported_model_types"]
