"""Comparisons: the distribution-shift benchmark (suites on frozen folds, every model and scope, seeds,
ablations, region detection, scores, tables and figures), the baselines it runs, and the experiments and
demo that are configs of the same engine. Command: ``kgml bench shift --suite NAME`` (``kgml.bench`` is the
old name of this package and still imports)."""
