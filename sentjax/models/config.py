"""Compatibility names. Each encoder family's config lives in its own module (``EncoderConfig``:
the BERT family's, ``sentjax.models.bert``); a config.json of any registered family is read by
``sentjax.models.registry.read_config``."""
from sentjax.errors import ConfigError
from sentjax.models.bert import EncoderConfig

__all__ = ["ConfigError", "EncoderConfig"]
