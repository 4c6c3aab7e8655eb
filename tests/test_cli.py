"""The dask-phot command line, run in-process as a user would call it."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from dask_phot.commands import main


@pytest.mark.slow
def test_simulate_then_run(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "f"), "--area-arcmin2", "2",
                 "--bands", "irac1", "nuv", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "dask-phot run" in out and (tmp_path / "f" / "config.toml").exists()
    assert main(["run", str(tmp_path / "f" / "config.toml"), "--quiet", "--workers", "1",
                 "--out", str(tmp_path / "cat")]) == 0
    out = capsys.readouterr().out
    assert "Dask dashboard: http://127.0.0.1:" in out and "source-bands/s" in out
    cat = pd.read_parquet(tmp_path / "cat" / "dataset")
    priors = pd.read_parquet(tmp_path / "f" / "priors.parquet")
    assert len(cat) == len(priors) and {"flux_irac1", "flux_err_nuv"} <= set(cat.columns)


def test_config_error_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[priors]\npath = "p.parquet"\n[bands.irac1]\nimages = ["x.fits"]\n'
                   "[engine]\nfit_skyy = true\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "engine.fit_skyy" in err and "fit_sky" in err


@pytest.mark.slow
def test_demo_serves_from_local_s3_and_reports_accuracy(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--area-arcmin2", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mosaics served from http://127.0.0.1:" in out
    assert "accuracy against the simulated truth" in out and "std 5-100" in out
    assert "(flags & UNRELIABLE_FLAGS) == 0" in out and "n flagged" in out
    for band in ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv"):
        assert band in out
    assert (tmp_path / "demo" / "catalog" / "properties").exists()
    # the demo keeps what its report needs (issue 16, finding 8): the report of its catalog
    # says in one note that the recorded S3 endpoint has gone; with the kept field's
    # config.toml it has every cutout
    pytest.importorskip("matplotlib")
    demo = tmp_path / "demo"
    assert f"--config {demo / 'field' / 'config.toml'}" in out
    assert main(["report", str(demo / "catalog"), "--out", str(tmp_path / "r1"),
                 "--n-sources", "1"]) == 0
    out, err = capsys.readouterr()
    assert "storage.endpoint_url: cannot reach" in out and "--config" in out and not err
    assert main(["report", str(demo / "catalog"), "--out", str(tmp_path / "r2"),
                 "--n-sources", "1", "--config", str(demo / "field" / "config.toml")]) == 0
    out, err = capsys.readouterr()
    assert "note:" not in out and len(list((tmp_path / "r2" / "img").glob("cutouts_*"))) == 1


def test_version(capsys):
    import dask_phot

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"dask-phot {dask_phot.__version__}"


def test_every_option_of_every_command_has_help():
    from dask_phot.commands import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"simulate", "run", "demo", "fetch", "detect", "cutouts",
                                "crossmatch", "plot", "psf", "report", "submit", "status",
                                "logs"}
    missing = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"options without help: {missing}"
    assert {a.dest: bool(a.help) for a in parser._actions} == {
        "help": True, "version": True, "verbose": True, "command": False}
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())


def test_the_entry_point_is_the_command_layers_main():
    import tomllib
    from importlib import import_module
    from pathlib import Path

    from dask_phot.commands import main as command_main

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["scripts"]["dask-phot"]
    module, _, name = target.partition(":")
    assert getattr(import_module(module), name) is command_main


def test_readme_shows_every_command_and_docs_describe_every_option():
    from pathlib import Path

    from dask_phot.commands import build_parser

    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    reference = (root / "docs" / "cli.md").read_text()
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, p in sub.choices.items():
        assert f"dask-phot {name} " in readme, f"README shows no `dask-phot {name}` example"
        assert f"## dask-phot {name}" in reference, f"docs/cli.md has no section for {name}"
        section = reference.split(f"## dask-phot {name}", 1)[1].split("\n## ", 1)[0]
        for action in p._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in section, f"docs/cli.md: {name} {flag} undocumented"
