"""Evaluation: STS / SentEval STS12-16 (``sts``), Tatoeba bitext retrieval (``retrieval``), NLI accuracy (``nli``,
``nli_head``); ``evaluators``: the same as named evaluators configured as data (``config.evals``)."""
