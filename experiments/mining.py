"""Hard negatives for supervised InfoNCE (issue 16 item 4): mined vs random vs NLI-contradiction.

  loss = mean_i [ logsumexp_j (cos(a_i, p_j)/T, cos(a_i, n_j)/T) - cos(a_i, p_i)/T ],  T = 0.05

over the global batch (every positive and every hard negative of the batch is a candidate). The three
rows train on the SAME (anchor, positive) rows in the same order, from the same start model and seed;
only the negative column differs:

  mined          ``sentjax mine`` with the start model (all-MiniLM-L6-v2): queries = the NLI-CAD training
                 premises, positives = their entailed hypotheses, corpus = every hypothesis of the bundled
                 NLI-CAD training file (entailments + contradictions); candidates at ranks 10..49 scoring
                 at least 0.05 below the positive, the first one kept (NV-Retriever's margin rule)
  random         a hypothesis of the same corpus drawn uniformly (numpy seed 0), not the row's positive
  contradiction  the premise's contradiction hypothesis (SimCSE supervised, the demo's data)

The pairs are the premises that got a mined negative (``prepare`` writes the three triplet TSVs once per
output folder). Evaluation: STS-B dev and SICK-R trial Spearman (run.py's columns) and nDCG@10 of
``bundled:stsb-retrieval`` (STS-B dev pairs scored >= 4, 262 queries over 1,467 documents).

Paper-scale setting (``PAPER``): NV-Retriever mines with a strong teacher over MS MARCO / NQ with
positive-aware margins, batch ~128-512, thousands of steps. Reduced CPU run, one seed:
  python experiments/run.py mining
"""
import os

import numpy as np

from sentjax.configs import demo

TITLE = "Hard negatives: mined (sentjax mine) vs random vs NLI contradiction (all-MiniLM-L6-v2, NLI-CAD)"
PAPER = {"model": "E5 / Mistral-7B embedders", "data": "MS MARCO, NQ + mined negatives (NV-Retriever)",
         "batch": "128-512", "steps": "thousands", "mining": "teacher top-k, positive-aware margin 0.95 relative"}
TRIPLETS = "bundled/nli_cad/all_combined/train.tsv"
MINE_ARGS = ("--range", "10:50", "--margin", "0.05", "--num-negatives", "1")
LIMIT = 0  # premises used (0 = all); the smoke test lowers it


def get_config():
    c = demo.get_config()
    c.workdir = "runs/mining"
    c.total_steps = 12
    c.log_every = 4
    c.evals.sts_dev.every_steps = 0
    c.best_metric = ""
    return c


CPU = {}
ROWS = {"mined negatives": {}, "random negatives": {}, "NLI contradiction negatives": {}}
_FILE = {"mined negatives": "mined", "random negatives": "random", "NLI contradiction negatives": "contradiction"}
FULL_EVAL = ()  # STS12-16 would double the run time; STS-B dev / SICK-R / retrieval only
BASELINES = {"MiniLM untrained": {"pooling": "mean"}}
RETRIEVAL = {"type": "retrieval", "data": "bundled:stsb-retrieval"}
TABLES = {"STS Spearman x100 and retrieval nDCG@10 x100":
          ["stsb_dev", "sickr_trial", "stsb_retrieval_ndcg10", "final_loss", "wall_s"]}
METRIC_NAMES = {"stsb_retrieval_ndcg10": "STS-B retrieval nDCG@10"}


def write_negatives(workroot: str, limit: int = 0) -> dict[str, str]:
    """Mines with all-MiniLM-L6-v2 (through the ``sentjax mine`` command) and writes the three triplet
    files of ``ROWS`` into ``workroot``; returns ``{file name: path}``. The same (anchor, positive)
    rows in all three, in the mined file's order."""
    from sentjax import cli
    from sentjax.data import readers
    from sentjax.data.sources import load_source
    from sentjax.testing import minilm_dir
    os.makedirs(workroot, exist_ok=True)
    paths = {k: os.path.join(workroot, f"{k}.tsv") for k in ("mined", "random", "contradiction")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    tri = load_source(f"nli-triplets:{TRIPLETS}").columns
    n = limit or len(tri["anchor"])
    anchors, positives, negatives = (tri[k][:n] for k in ("anchor", "positive", "negative"))
    pairs, corpus = os.path.join(workroot, "pairs.tsv"), os.path.join(workroot, "corpus.txt")
    with open(pairs, "w", encoding="utf-8") as f:
        f.write("sentence1\tsentence2\n" + "".join(f"{a}\t{p}\n" for a, p in zip(anchors, positives)))
    hypotheses = list(dict.fromkeys([*positives, *negatives]))
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("".join(h + "\n" for h in hypotheses))
    rc = cli.main(["mine", "--model", minilm_dir(), "--pairs", pairs, "--corpus", corpus, *MINE_ARGS,
                   "--out", paths["mined"]])
    if rc != 0:
        raise SystemExit(f"sentjax mine failed with status {rc}")
    q, p, mined = readers.read_headed_tsv(paths["mined"], ("sent0", "sent1", "hard_neg"), "mined triplets")
    contradiction = {(a, b): c for a, b, c in zip(anchors, positives, negatives)}
    rng = np.random.default_rng(0)
    random_neg = []
    for a, b in zip(q, p):
        while True:  # uniform over the corpus, never the row's own positive or anchor
            h = hypotheses[int(rng.integers(len(hypotheses)))]
            if h not in (a, b):
                break
        random_neg.append(h)
    for name, neg in (("random", random_neg), ("contradiction", [contradiction[(a, b)] for a, b in zip(q, p)])):
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write("sent0\tsent1\thard_neg\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(q, p, neg)))
    print(f"[mining] {len(q)} of {n} premises got a mined negative; wrote {sorted(paths.values())}", flush=True)
    return paths


def prepare(cfg, row, workroot):
    """The three triplet files once per output folder; each row trains on its own."""
    smoke = cfg.model.init_from == ""  # run.py's --smoke swaps in a random encoder
    root = os.path.abspath(workroot)
    if os.path.basename(root) == "_cfg":  # run.py's config of the table heading: same files
        root = os.path.dirname(root)
    limit = 64 if smoke else LIMIT
    paths = write_negatives(os.path.join(root, f"negatives-{limit or 'all'}"), limit)
    cfg.data.datasets = (f"triplets:{paths[_FILE[row]]}",)


def extra_eval(model, summary, cfg, baseline):
    """nDCG@10 x100 of bundled:stsb-retrieval (cheap: 1,729 texts)."""
    from run import encoder_of, evaluate
    return evaluate({"stsb_retrieval_ndcg10": RETRIEVAL}, encoder_of(model))


NOTES = """
One seed, 12 steps of batch 32 (384 of the 1,597 pairs), lr 5e-5, max length 32 on 2 shared CPU cores: all
three rows stay within 0.2 STS-B dev / 0.4 SICK-R / 0.3 nDCG@10 of the untrained model and of each other, the
size of seed noise at this budget, so no ranking of the three negative sources is established; it needs more
seeds and steps. Mining (`sentjax mine --range 10:50 --margin 0.05 --num-negatives 1`, all-MiniLM-L6-v2, 1,667
premise/entailment pairs over 3,308 hypotheses): 1,597 pairs got a negative, the 70 others are left out of all
three rows. The mined file is written by `sentjax mine` itself (see `prepare`); its `pos_score` / `neg_score`
columns hold the start model's cosines. Run time: the 2026-12-02 run shared the 2 cores with other jobs (load
average 12-17): 19.6 min for the three rows (the first row trained at 1.2 pairs/s, the others at 2.4-2.7), plus
about 15 min the first time for the mining and the untrained model's evaluation (cached in `baselines.json` and
the run folder); an unloaded machine takes a fraction of that.
"""
