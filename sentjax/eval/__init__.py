"""Evaluation: STS / SentEval STS12-16 (``sts``), Tatoeba bitext retrieval (``retrieval``), NLI accuracy (``nli``)."""
