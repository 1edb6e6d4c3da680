"""Data: bundled real datasets (``sentjax.data.bundled.path("<dataset>/<file>")``), file readers
(``sentjax.data.readers``) and the training input pipeline (``sentjax.data.pipeline``)."""
