"""README main job (``sentjax demo`` runs the same config): supervised SimCSE from
all-MiniLM-L6-v2 on bundled NLI-CAD triplets, a few minutes on 2 CPU cores; STS-B dev Spearman
before/after; exports the best model. See ``sentjax/configs/demo.py`` for the setting.

  sentjax train --config experiments/demo.py
"""
from sentjax.configs.demo import get_config  # noqa: F401
