"""``--quiet`` silences progress, notes and results but never errors; without it the first training step is
announced as compiling (it would otherwise look like a hang, or like an ETA of hours)."""

from __future__ import annotations

import pytest

from kgml.cli import build_parser, iter_commands, main
from kgml.config import (
    CorpusConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    save_config,
)
from kgml.progress import COMPILING_NOTE, dask_progress, is_quiet, note, quiet_output


def _tiny_config(tmp_path):
    cfg = ExperimentConfig(
        name="tiny", data=DataConfig(corpus=CorpusConfig(sites_per_block=2, years=1),
                                     features=("tair", "sw_in", "vpd", "precip"), daily_targets=("nee",),
                                     yield_target=False),
        model=ModelConfig(hidden=4, location_dim=4, embed_dim=4, head_hidden=4),
        train=TrainConfig(steps=2, batch_size=2, eval_every=1))
    return save_config(cfg, tmp_path / "tiny.json")


@pytest.mark.slow
def test_quiet_train_prints_nothing_and_the_note_appears_without_it(tmp_path, capfd):
    path = _tiny_config(tmp_path)
    assert main(["train", str(path), "--out", str(tmp_path / "loud"), "--no-figures"]) == 0
    out, err = capfd.readouterr()
    assert COMPILING_NOTE in err and "wrote" in out
    assert main(["train", str(path), "--out", str(tmp_path / "quiet"), "--no-figures", "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), (out, err)
    assert (tmp_path / "quiet" / "metrics.json").is_file()  # quiet, not idle
    assert not is_quiet()  # the switch does not outlive the command


def test_quiet_never_hides_an_error(tmp_path, capfd):
    assert main(["--quiet", "train", str(tmp_path / "missing.toml")]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.startswith("kgml train: error: ") and "missing.toml" in err
    assert main(["data", "summary", "--data-dir", str(tmp_path / "nowhere"), "--quiet"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and "nowhere" in err


def test_every_command_takes_quiet():
    for words, sub in iter_commands(build_parser()):
        if any(a.__class__.__name__ == "_SubParsersAction" for a in sub._actions):
            continue
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"--quiet", "--debug"} <= flags, " ".join(words)


def test_notes_and_dask_progress_follow_the_switch(capsys):
    import dask.array as da

    x = da.ones((40, 40), chunks=10).sum()
    note("hello")
    with dask_progress(minimum=0):
        assert int(x.compute()) == 1600
    err = capsys.readouterr().err
    assert "hello" in err and "100%" in err
    with quiet_output():
        note("hello")
        with dask_progress(minimum=0):
            x.compute()
        print("a result")
    assert capsys.readouterr() == ("", "")
    with dask_progress("tcp://127.0.0.1:1", minimum=0):  # a distributed scheduler: no local bar
        x.compute(scheduler="sync")
    assert "100%" not in capsys.readouterr().err
