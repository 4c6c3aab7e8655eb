"""``python -m dask_phot.commands ...``: the ``dask-phot`` command."""

import sys

from dask_phot.commands import main

if __name__ == "__main__":
    sys.exit(main())
