"""Compare two benchmark result files (JSON lines from `benchmarks/record.py`) and flag every figure that got
≥ 20 % slower.

    python benchmarks/compare.py OLD.jsonl NEW.jsonl [--threshold 0.2] [--benchmark process_speed]

For each benchmark present in both files the LAST line of each is compared (so a results file can keep its
history). Direction from the figure's name: ``*_per_s``, ``*speedup*``, ``*ratio*`` are rates (higher is better);
``*_s``, ``*_ms``, ``*seconds*`` are times (lower is better); ``*_gb``/``*memory*`` are memory (lower is better).
"Slower by ≥ 20 %" means the new rate ≤ 0.8 × the old one (a time ≥ 1.25 × the old; memory ≥ 1.2 × the old).
Other figures (sizes, differences) are listed but not judged. Both machines and their load averages are
printed: a figure measured under a higher load is not a regression of the code. Exit status 1 when any figure
is flagged, 0 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class BadInput(Exception):
    """A results file that is missing or malformed (one-line message)."""


def load(path: Path) -> dict[str, dict]:
    """Last line per benchmark of a results file."""
    if not path.is_file():
        raise BadInput(f"compare: {path}: no such file")
    latest: dict[str, dict] = {}
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            latest[line["benchmark"]] = line
            line["figures"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInput(f"compare: {path}:{i}: not a benchmark result line ({err})") from err
    return latest


def direction(name: str) -> str | None:
    n = name.lower()
    if n.endswith("_per_s") or "speedup" in n or "ratio" in n:
        return "rate"
    if n.endswith("_gb") or "memory" in n:
        return "memory"
    if n.endswith("_s") or n.endswith("_ms") or "seconds" in n:
        return "time"
    return None


def change(name: str, old: float, new: float, threshold: float) -> tuple[str, bool]:
    """A readable change and whether it is a regression by ``threshold``."""
    kind = direction(name)
    if kind is None or old == 0 or new == 0:
        return "", False
    if kind == "rate":
        r = new / old
        return f"{r:.2f}× rate", r <= 1.0 - threshold
    if kind == "time":
        r = old / new  # as a rate
        return f"{r:.2f}× rate", r <= 1.0 - threshold
    r = new / old
    return f"{r:.2f}× memory", r >= 1.0 + threshold


def _machine_line(line: dict) -> str:
    m = line.get("machine", {})
    return (f"{m.get('cpu_model', '?')}, {m.get('cpus_usable', m.get('cpu_count', '?'))} cores, "
            f"{m.get('jax_backend', '-')} | load {line.get('load_start')} → {line.get('load_end')} | "
            f"{line.get('date', '?')} | {line.get('commit') or '?'}")


def compare(old: dict[str, dict], new: dict[str, dict], threshold: float, only: str | None = None) -> list[str]:
    flagged = []
    names = [b for b in old if b in new and (only is None or b == only)]
    if not names:
        raise BadInput("compare: no benchmark appears in both files" + (f" (asked for {only})" if only else ""))
    for bench in names:
        a, b = old[bench], new[bench]
        print(f"\n== {bench}\n   old: {_machine_line(a)}\n   new: {_machine_line(b)}")
        for name in sorted(set(a["figures"]) & set(b["figures"])):
            x, y = a["figures"][name], b["figures"][name]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y)):
                continue
            text, bad = change(name, float(x), float(y), threshold)
            mark = "  SLOWER" if bad else ""
            print(f"   {name:42s} {x:>14.6g} → {y:>14.6g}  {text}{mark}")
            if bad:
                flagged.append(f"{bench}.{name}")
    return flagged


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--threshold", type=float, default=0.2, help="relative slow-down that is flagged (0.2 = 20 %%)")
    p.add_argument("--benchmark", help="compare only this benchmark")
    args = p.parse_args(argv)
    if not 0 < args.threshold < 1:
        print(f"compare: --threshold must lie in (0, 1); got {args.threshold}", file=sys.stderr)
        return 2
    try:
        flagged = compare(load(args.old), load(args.new), args.threshold, args.benchmark)
    except BadInput as err:
        print(err, file=sys.stderr)
        return 2
    if flagged:
        print(f"\n{len(flagged)} figure(s) ≥ {args.threshold:.0%} slower: {', '.join(flagged)}")
        return 1
    print(f"\nno figure ≥ {args.threshold:.0%} slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
