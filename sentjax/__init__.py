"""sentjax: large-batch sentence-embedding training in JAX/Flax."""
__version__ = "0.1.0"
