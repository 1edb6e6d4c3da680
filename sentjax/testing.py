"""Helpers for tests and examples: where the bundled real models live (``sentjax.models.bundled``)."""
from sentjax.models.bundled import minilm_dir, multilingual_tokenizer_dir

__all__ = ["minilm_dir", "multilingual_tokenizer_dir"]
