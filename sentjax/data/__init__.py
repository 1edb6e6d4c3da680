"""Data, lowest layer first (no module imports one above it; nothing here imports ``sentjax.train``):

  bundled/          the real datasets shipped with sentjax; ``bundled.resolve`` maps ``bundled/<ds>/<file>``
  readers.py        file formats only, one reader per format (``read_sts``: the one STS entry point)
  augment.py        SimCSE Table 1 text augmentations (pure functions of (seed, epoch, step, row))
  tfds_builders.py  TFDS array_record builders and catalogue field maps (``read_tfds``)
  sources.py        ``Source``, ``DataError`` and the ``kind:path`` dataset-spec registry (``load_source``)
  pipeline.py       the global order (seed, step) -> batch, this process's rows, the prefetch thread
"""
