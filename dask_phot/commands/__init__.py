"""The ``dask-phot`` command line: a thin layer over the library.

Every subcommand lives here, one module per family: :mod:`~.run` (``simulate``,
``run``, ``demo``), :mod:`~.fetch`, :mod:`~.detect` (``detect``, ``cutouts``),
:mod:`~.crossmatch`, :mod:`~.plot`, :mod:`~.report` and :mod:`~.kubernetes`
(``submit``, ``status``, ``logs``). Commands parse arguments, call the library,
print and choose the exit code; the library never imports them (a test checks
it). ``python -m dask_phot.commands`` is the same command as ``dask-phot``.
The reference of every command and option is ``docs/cli.md``.
"""

from dask_phot.commands.main import build_parser, main

__all__ = ["build_parser", "main"]
