"""The distribution-shift benchmark (issue 5): suites on frozen folds, every model and scope, region
detection, scores, tables and figures. Command: ``kgml bench shift --suite NAME``."""
