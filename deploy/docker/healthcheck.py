"""Container health check of the dask-phot image (scheduler, worker or job runner).

Healthy when a Dask HTTP server on this container answers ``/health`` with ``ok``
(scheduler dashboard 8787, worker 8788; ``DASK_PHOT_HEALTH_PORTS`` overrides), or,
when none listens (a job runner, a one-off command), when dask_phot imports.
Exit status 0: healthy; 1: unhealthy. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(ports: list[int], *, timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, reason) for the Dask HTTP servers on ``ports`` of 127.0.0.1."""
    for port in ports:
        url = f"http://127.0.0.1:{port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read(64).decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as exc:
            return False, f"{url}: HTTP {exc.code}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                continue  # nothing listens on this port
            return False, f"{url}: {exc.reason}"
        except OSError as exc:  # a server that accepts but does not answer in time
            return False, f"{url}: {exc!r}"
        return body == "ok", f"{url}: {body!r}"
    try:
        import dask_phot  # noqa: F401
    except Exception as exc:  # any failure to import is unhealthy
        return False, f"import dask_phot failed: {exc!r}"
    return True, "no Dask server here; dask_phot imports"


def main() -> int:
    """Run the check; print the reason; exit 0 if healthy."""
    ports = [int(p) for p in os.environ.get("DASK_PHOT_HEALTH_PORTS", "8787,8788").split(",")
             if p.strip()]
    healthy, reason = check(ports)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
