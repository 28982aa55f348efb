"""One flag convention on every command (README "Flag conventions"): this walks every subcommand's parser."""

from __future__ import annotations

import argparse
import re

import pytest

from kgml.cli import build_parser, iter_commands
from kgml.cliopts import KeyValueAction, ListAction

#: Commands that write files (all take --out and --force) and the two that only read.
READ_ONLY = {("data", "summary"): "prints a summary", ("bench", "summary"): "prints a table",
             ("completion",): "prints a shell script"}
#: Commands with --out but no --force, and why.
NO_FORCE = {("bench", "shift"): "resumes into --out and never replaces a finished fit"}
#: Commands with randomness: each takes --seed.
SEEDED = {("train",), ("finetune",), ("demo",), ("bench", "shift"), ("gapfill",), ("partition",), ("map",),
          ("explain",), ("scenario",)}
#: Commands that draw PNG figures: each takes --no-figures.
FIGURES = {("train",), ("finetune",), ("demo",), ("bench", "shift"), ("map",), ("explain",), ("scenario",)}
#: Spellings that the convention replaces; none may be visible in --help.
FORBIDDEN = {"--data", "--datadir", "--data-path", "--output", "--outdir", "--out-dir", "--output-dir",
             "--overwrite", "--no-figure", "--nofigures", "--random-seed", "--rng", "--silent"}
FLAG = re.compile(r"^--[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _leaves():
    out = []
    for words, parser in iter_commands(build_parser()):
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            out.append((words, parser))
    return out


LEAVES = _leaves()


def _visible(parser):
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("words,parser", LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_every_command_follows_the_flag_convention(words, parser):
    name = "kgml " + " ".join(words)
    visible = _visible(parser)
    flags = {s for a in visible for s in a.option_strings}
    for a in visible:
        for s in a.option_strings:
            assert FLAG.match(s), f"{name} {s}: flags are --lower-case-with-hyphens (no short forms, no _)"
        assert a.help, f"{name} {a.option_strings[0]}: no help text"
        many = a.nargs in ("*", "+") or isinstance(a, argparse._AppendAction)
        if many:
            assert isinstance(a, ListAction | KeyValueAction), (
                f"{name} {a.option_strings[0]}: a list option must be a ListAction (commas or spaces, "
                "repeatable) or a KeyValueAction")
        if a.dest == "seed":
            assert a.type is int, f"{name} --seed must be an integer"
    assert not flags & FORBIDDEN, f"{name}: old spellings visible: {sorted(flags & FORBIDDEN)}"
    assert {"--quiet", "--debug"} <= flags, name
    if words not in READ_ONLY:
        assert "--out" in flags, f"{name} writes files: it needs --out"
        out = next(a for a in visible if "--out" in a.option_strings)
        assert out.metavar in ("FILE", "FILE.nc", "DIR"), f"{name} --out: metavar FILE, FILE.nc or DIR, got {out.metavar}"
        if words not in NO_FORCE:
            assert "--force" in flags, f"{name} writes files: it needs --force to replace them"
    else:
        assert "--out" not in flags, f"{name} writes nothing; --out would say otherwise"
    if tuple(words) in SEEDED:
        assert "--seed" in flags, f"{name} has randomness: it needs --seed"
    if tuple(words) in FIGURES:
        assert "--no-figures" in flags, f"{name} draws figures: it needs --no-figures"
    for a in visible:
        if "dir" in a.dest.split("_"):
            assert a.metavar == "DIR", f"{name} {a.option_strings[0]}: metavar DIR"


def test_list_options_take_commas_spaces_and_repeats():
    parser = build_parser()
    base = ["bench", "shift", "--suite", "synthetic_shift"]
    for extra in (["--models", "rf,gbm"], ["--models", "rf", "gbm"], ["--models", "rf", "--models", "gbm"],
                  ["--models", "rf, gbm"]):
        assert parser.parse_args(base + extra).models == ["rf", "gbm"], extra
    args = parser.parse_args(["explain", "RUN", "--forcing", "a.nc", "--out", "d", "--drivers", "tair", "--drivers",
                              "vpd"])
    assert args.drivers == ["tair", "vpd"]  # given on the line: replaces the default, then extends
    assert parser.parse_args(["explain", "RUN", "--forcing", "a.nc", "--out", "d"]).drivers == \
        ["tair", "sw_in", "vpd", "precip"]
    args = parser.parse_args(["bench", "summary", "--metric", "nee=r2,rmse", "gpp=nse", "--metric", "reco=kge"])
    assert args.metric == ["nee=r2,rmse", "gpp=nse", "reco=kge"]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "summary", "--metric", "nee"])
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--models", "rf,,gbm"])


def test_scripts_spellings_keep_working():
    """The lines scripts and RESULTS.md use parse exactly as before; old spellings are hidden aliases."""
    parser = build_parser()
    args = parser.parse_args(["bench", "shift", "--suite", "fluxnet_mm", "--data-dir", "D", "--folds-dir", "F",
                              "--out", "O", "--models", "rf,hybrid_global", "--no-results", "--no-progress",
                              "--no-figures"])
    assert (args.data_dir, args.folds_dir, args.out, args.models) == ("D", "F", "O", ["rf", "hybrid_global"])
    assert args.no_results and args.no_progress and args.no_figures
    assert parser.parse_args(["data", "summary"]).only is None
    assert parser.parse_args(["data", "summary", "--only", "a", "b"]).only == ["a", "b"]
    args = parser.parse_args(["map", "R1", "R2", "--forcing", "f1.nc", "f2.nc", "--out", "m.nc"])
    assert args.runs == ["R1", "R2"] and args.forcing == ["f1.nc", "f2.nc"] and args.out == "m.nc"
    args = parser.parse_args(["train", "c.toml", "--out", "r", "--resume", "--force", "--no-figures"])
    assert args.resume and args.force and args.no_figures and args.seed is None and args.data_dir is None
    assert parser.parse_args(["predict", "RUN", "--data", "x.nc", "--out", "p.nc"]).dataset == "x.nc"
    assert parser.parse_args(["predict", "RUN", "--out", "p.nc"]).dataset is None
    assert parser.parse_args(["bench", "summary", "--out", "B"]).bench_dir == "B"
    assert parser.parse_args(["bench", "summary"]).bench_dir == "runs/bench"
    assert parser.parse_args(["demo", "--no-figure"]).no_figures
    assert not parser.parse_args(["demo"]).no_figures
    args = parser.parse_args(["data", "build", "il_corn", "--out", "x.nc", "--option", "years=[2012, 2013]",
                              "--option", 'counties=["17001"]'])
    assert args.option == ["years=[2012, 2013]", 'counties=["17001"]']


def test_force_is_needed_to_replace_an_output(tmp_path, capsys):
    from kgml.cli import main

    src = tmp_path / "in.txt"
    src.write_text("x")
    out = tmp_path / "exists.nc"
    out.write_text("old")
    rc = main(["partition", str(src), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "exists.nc exists; pass --force" in err and out.read_text() == "old"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "x"\n')
    assert main(["train", str(cfg), "--out", str(run)]) == 2
    assert "pass --force" in capsys.readouterr().err and (run / "config.json").read_text() == "{}"
