"""The ``dask-phot`` parser and entry point: subcommands from the command modules.

Each module of :data:`COMMANDS` has ``register(subparsers) -> None``, which
adds its subcommands with ``func`` (``args -> exit code``) as their default. A
user's mistake (a bad configuration value, a missing file, an archive or a
Kubernetes API that says no) is one line on stderr and exit code 2; the
library's own bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dask_phot import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

#: Modules that add subcommands, in the order ``dask-phot --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "dask_phot.commands.run", "dask_phot.commands.fetch", "dask_phot.commands.detect",
    "dask_phot.commands.cutouts", "dask_phot.commands.crossmatch", "dask_phot.commands.plot",
    "dask_phot.commands.psf", "dask_phot.commands.report", "dask_phot.commands.kubernetes",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``dask-phot`` argument parser."""
    p = argparse.ArgumentParser(
        prog="dask-phot", description="Multi-wavelength forced photometry at scale: priors "
        "in, a HATS/Parquet catalog out, on Dask. Every command: docs/cli.md.")
    p.add_argument("--version", action="version", version=f"dask-phot {__version__}",
                   help="print the version and exit")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-vv: Dask's too)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    from dask_phot.archive import ArchiveError
    from dask_phot.bands import BandError
    from dask_phot.commands.kubernetes import DeployError
    from dask_phot.config import ConfigError
    from dask_phot.images import MosaicError
    from dask_phot.pipeline import IncompleteCatalogError, InputError
    from dask_phot.psf import PSFError
    from dask_phot.storage import StorageError

    return (ConfigError, BandError, PSFError, ArchiveError, DeployError, FileNotFoundError,
            InputError, StorageError, IncompleteCatalogError, MosaicError)


def _cancelled_gather(record: logging.LogRecord) -> bool:
    """Drop the scheduler's "Couldn't gather keys" error: after Ctrl-C it is the
    cancelled cells' results (the run says what it kept), and otherwise the client
    raises the same failure where the run handles it."""
    return not record.getMessage().startswith("Couldn't gather keys")


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import dask

    # distributed logs at INFO to stderr by default (workers too): keep it behind -vv
    quiet_libs = "info" if verbose >= 2 else "warning"
    dask.config.set({"logging": {"distributed": quiet_libs, "bokeh": "error",
                                 "tornado": "error"}})
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(quiet_libs.upper())
    if verbose < 2:  # a closing LocalCluster kills its workers, saying so: not news
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
        logging.getLogger("distributed.scheduler").addFilter(_cancelled_gather)
    # storage clients log request headers (signed with the credentials) at DEBUG
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "aiohttp"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dask-phot`` command."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (*_user_errors(), *getattr(args, "errors", ())) as exc:
        print(f"dask-phot {args.command}: error: {exc}", file=sys.stderr)
        return 2
