"""Shared pytest fixtures: a local S3 endpoint, a range-capable HTTP server, FITS mosaics.

Fixtures here are generic; add new ones in their own section.
"""

from __future__ import annotations

import base64
import gzip
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.s3server import LocalS3Server

# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """A moto S3 endpoint on 127.0.0.1 for the whole session (use unique bucket names)."""
    with LocalS3Server() as server:
        yield server


class _RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support; counts body bytes."""

    counter: dict[str, int]

    def send_head(self) -> Any:
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match[1])
        end = min(int(match[2]) if match[2] else size - 1, size - 1)
        if start >= size:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.counter["bytes"] += len(body)
        return io.BytesIO(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""


@dataclass
class HTTPDir:
    """A directory served over HTTP: ``url`` is its base (ends with ``/``)."""

    root: Path
    url: str
    counter: dict[str, int]


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[HTTPDir]:
    """Serve a fresh temporary directory over HTTP (range requests) on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    counter = {"bytes": 0}

    def handler(*args: Any, **kwargs: Any) -> _RangeRequestHandler:
        h = type("Handler", (_RangeRequestHandler,), {"counter": counter})
        return h(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HTTPDir(root, f"http://127.0.0.1:{server.server_port}/", counter)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------
# FITS mosaics
# --------------------------------------------------------------------------------------


def _tan_wcs(
    shape: tuple[int, int] = (400, 600),
    center: tuple[float, float] = (150.1, 2.2),
    pixscale_arcsec: float = 0.6,
) -> WCS:
    """A TAN WCS centred on ``center`` (RA, Dec in degrees) for an image of ``shape``."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(center)
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.wcs.cdelt = [-pixscale_arcsec / 3600.0, pixscale_arcsec / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def _write_raw_fits(
    path: str | os.PathLike[str],
    raw: np.ndarray,
    header: fits.Header | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write a 2-D array *as stored* (no scaling by astropy) as a primary HDU.

    ``header`` may carry BSCALE/BZERO/BLANK and a WCS; the array's dtype sets BITPIX.
    With ``compress`` the file is gzip-compressed.
    """
    bitpix = {"u1": 8, "i2": 16, "i4": 32, "i8": 64, "f4": -32, "f8": -64}[raw.dtype.str[1:]]
    out = fits.Header()
    out["SIMPLE"] = True
    out["BITPIX"] = bitpix
    out["NAXIS"] = 2
    out["NAXIS1"] = raw.shape[1]
    out["NAXIS2"] = raw.shape[0]
    out.extend(header or fits.Header(), unique=True, strip=False)
    payload = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
    payload += b"\0" * (-len(payload) % 2880)
    blob = out.tostring().encode("ascii") + payload
    path = Path(path)
    with gzip.open(path, "wb") if compress else open(path, "wb") as f:
        f.write(blob)
    return path


@pytest.fixture
def tan_wcs() -> Callable[..., WCS]:
    """``tan_wcs(shape=(400, 600), center=(150.1, 2.2), pixscale_arcsec=0.6) -> WCS``."""
    return _tan_wcs


@pytest.fixture
def write_raw_fits() -> Callable[..., Path]:
    """``write_raw_fits(path, raw, header=None, *, compress=False) -> Path``: pixels as
    stored (BSCALE/BZERO/BLANK in ``header`` are written, not applied)."""
    return _write_raw_fits


@dataclass
class MosaicFiles:
    """A written mosaic: the files and the arrays (physical values) in them."""

    sci: Path
    noise: Path | None
    data: np.ndarray
    noise_data: np.ndarray | None
    wcs: WCS


@pytest.fixture
def write_mosaic(tmp_path: Path) -> Callable[..., MosaicFiles]:
    """Factory writing a seeded float32 mosaic with a TAN WCS and a weight map.

    Call as ``write_mosaic(name="m", shape=(400, 600), center=(150.1, 2.2),
    pixscale_arcsec=0.6, noise="weight"|"uncertainty"|"variance"|None, seed=0,
    directory=tmp_path, compress=False)``. The weight map is 0 on a masked corner and
    the science image has a few NaN pixels.
    """

    def make(
        name: str = "m",
        *,
        shape: tuple[int, int] = (400, 600),
        center: tuple[float, float] = (150.1, 2.2),
        pixscale_arcsec: float = 0.6,
        noise: str | None = "weight",
        seed: int = 0,
        directory: str | os.PathLike[str] | None = None,
        compress: bool = False,
    ) -> MosaicFiles:
        rng = np.random.default_rng(seed)
        out = Path(directory) if directory is not None else tmp_path
        out.mkdir(parents=True, exist_ok=True)
        wcs = _tan_wcs(shape, center, pixscale_arcsec)
        header = wcs.to_header()
        data = rng.normal(1.0, 0.1, shape).astype(np.float32)
        data[5, 7] = data[shape[0] // 2, shape[1] // 3] = np.nan
        suffix = ".fits.gz" if compress else ".fits"
        sci = _write_raw_fits(out / f"{name}_sci{suffix}", data, header, compress=compress)
        if noise is None:
            return MosaicFiles(sci, None, data.astype(float), None, wcs)
        sigma = rng.uniform(0.05, 0.2, shape).astype(np.float32)
        values = {"weight": 1 / sigma**2, "uncertainty": sigma, "variance": sigma**2}[noise]
        values[:20, :30] = 0.0 if noise == "weight" else np.nan
        path = _write_raw_fits(
            out / f"{name}_{noise[:3]}{suffix}",
            values.astype(np.float32),
            header,
            compress=compress,
        )
        return MosaicFiles(sci, path, data.astype(float), values.astype(float), wcs)

    return make


# --------------------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """The address of a LocalCluster (2 worker processes) shared by the session's tests
    that run the command line against a scheduler (``--scheduler ADDRESS``): its workers
    compile the engine once. Tests that kill workers start their own cluster."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


# --------------------------------------------------------------------------------------
# Browser: Debian's headless chromium through the DevTools protocol (websocket-client)
# --------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """Minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def load(self, page: Path) -> dict:
        """Open a local page; its problems, image states and a full-page screenshot."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        images = self.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth])"))["result"]["value"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        problems = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                problems.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
                problems.append(f"console {p['type']}: {p.get('args')}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                problems.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                problems.append(f"load failed: {p.get('errorText')}")
        return {"problems": problems, "images": images, "png": base64.b64decode(shot["data"])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless chromium page (skips, saying why, without chromium or websocket-client:
    ``apt-get install -y chromium``)."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("websocket", reason="websocket-client needed to drive chromium")
    port = _free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--remote-debugging-port={port}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                            timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > end or proc.poll() is not None:
                pytest.skip("chromium did not start a DevTools endpoint")
            time.sleep(0.2)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
