"""sentjax: large-batch sentence-embedding training in JAX/Flax."""
from sentjax._version import __version__
from sentjax.models.api import ModelLoadError, SentenceModel, init_model, load, save

__all__ = ["ModelLoadError", "SentenceModel", "init_model", "load", "save", "__version__"]
