"""A thin wrapper over the podman command for podman_test.py.

Every call passes ``--runtime runc`` (crun fails on this kind of machine: "cgroups in
hybrid mode not supported") and the environment's ``CONTAINERS_CONF`` (podman_test.py
writes one with ``default_ulimits = []``: podman's default ulimits cannot be set here).
Only containers this object started are ever removed, by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

__all__ = ["Podman", "PodmanError"]


class PodmanError(RuntimeError):
    """A podman command failed; the message holds its stderr."""


class Podman:
    """Run podman commands; remember and remove the containers started through it."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.started: list[str] = []

    def _cmd(self, args: tuple[str, ...]) -> list[str]:
        return ["podman", "--runtime", "runc", *args]

    def run(self, *args: str, timeout: float = 600, capture: bool = True,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman ARGS``; raises :class:`PodmanError` on failure when ``check``."""
        out = subprocess.run(self._cmd(args), env=self.env, text=True, timeout=timeout,
                             capture_output=capture)
        if check and out.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])} ... exited {out.returncode}: "
                              f"{(out.stderr or '')[-3000:]}")
        return out

    def ok(self, *args: str, timeout: float = 120) -> bool:
        """Whether ``podman ARGS`` succeeds (output discarded)."""
        try:
            return self.run(*args, timeout=timeout, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def image_size(self, image: str) -> int:
        """Size of a local image in bytes (as ``podman images`` counts it)."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout)

    def start(self, run_args: list[str]) -> str:
        """``podman run --detach ...`` (arguments from pods.podman_run_args); its name."""
        name = run_args[run_args.index("--name") + 1]
        self.started.append(name)
        # a HEALTHCHECK timer needs systemd: the caller runs `podman healthcheck run`
        self.run(*run_args[:1], "--health-interval", "disable", *run_args[1:])
        return name

    def inspect(self, name: str, template: str) -> str:
        """``podman inspect --format TEMPLATE NAME``."""
        return self.run("inspect", "--format", template, name).stdout.strip()

    def wait(self, name: str, timeout: float) -> int:
        """Wait for a container to exit; its exit code."""
        return int(self.run("wait", name, timeout=timeout).stdout.strip().splitlines()[-1])

    def healthcheck(self, name: str) -> tuple[bool, str]:
        """Run the image's HEALTHCHECK in a container: (healthy, output)."""
        out = self.run("healthcheck", "run", name, check=False)
        return out.returncode == 0, (out.stdout + out.stderr).strip()

    def logs(self, name: str) -> str:
        """A container's stdout and stderr."""
        out = self.run("logs", name, check=False)
        return out.stdout + out.stderr

    def exec(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``podman exec NAME ARGS``."""
        return self.run("exec", name, *args, check=False)

    def remove_started(self) -> None:
        """Remove (force) the containers started through this object, one by one.

        A removal is tried twice (podman 4.3 sometimes fails on a container whose
        health check ran, looking for systemd); one that still exists is reported.
        """
        names, self.started = self.started, []
        for name in names:
            for _ in range(2):
                self.run("rm", "--force", "--time", "5", name, check=False, timeout=120)
                if not self.ok("container", "exists", name):
                    break
            else:
                print(f"podman_test: could not remove container {name}", file=sys.stderr)

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove_started()
