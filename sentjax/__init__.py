"""sentjax: large-batch sentence-embedding training in JAX/Flax."""
__version__ = "0.1.0"

from sentjax.api import ModelLoadError, SentenceModel, init_model, load, save  # noqa: E402

__all__ = ["ModelLoadError", "SentenceModel", "init_model", "load", "save", "__version__"]
