"""benchmarks/compare.py: a figure ≥ 20 % slower is flagged (rates, times and memory alike), others are not."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_compare", Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _write(path: Path, figures: dict, bench: str = "process_speed") -> Path:
    line = {"benchmark": bench, "figures": figures, "machine": {"cpu_model": "test"}, "load_start": [0.1],
            "load_end": [0.1], "date": "2026-12-01T00:00:00Z", "commit": "abc"}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    return path


def test_flags_slower_rates_times_and_memory_only(tmp_path, capsys):
    old = _write(tmp_path / "old.jsonl", {"forward_site_days_per_s": 100.0, "grad_site_days_per_s": 100.0,
                                          "wall_s": 10.0, "peak_memory_gb": 2.0, "sites": 5})
    new = _write(tmp_path / "new.jsonl", {"forward_site_days_per_s": 81.0, "grad_site_days_per_s": 79.0,
                                          "wall_s": 12.6, "peak_memory_gb": 2.5, "sites": 1})
    assert compare.main([str(old), str(new)]) == 1
    out = capsys.readouterr().out
    flagged = out.strip().splitlines()[-1]
    assert "grad_site_days_per_s" in flagged and "wall_s" in flagged and "peak_memory_gb" in flagged
    assert "forward_site_days_per_s" not in flagged and "sites" not in flagged


def test_last_line_per_benchmark_is_compared_and_faster_passes(tmp_path):
    old = _write(tmp_path / "old.jsonl", {"forward_site_days_per_s": 1.0})
    _write(old, {"forward_site_days_per_s": 100.0})
    new = _write(tmp_path / "new.jsonl", {"forward_site_days_per_s": 95.0})
    assert compare.main([str(old), str(new)]) == 0
    _write(new, {"forward_site_days_per_s": 50.0})
    assert compare.main([str(old), str(new)]) == 1


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    good = _write(tmp_path / "good.jsonl", {"x_per_s": 1.0})
    assert compare.main([str(bad), str(good)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert compare.main([str(tmp_path / "missing.jsonl"), str(good)]) == 2
