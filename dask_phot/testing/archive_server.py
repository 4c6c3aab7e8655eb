"""A local HTTP server answering archive requests with recorded replies (tests, benchmarks).

No archive can be reached from the test machines, so the archive code runs
against replies recorded from the services (or written in their exact shape,
see ``tests/data/archive/README.md``), served on 127.0.0.1: each :class:`Route`
matches a request's method, path and parameters (a value or a predicate per
parameter) and answers with fixed bytes, or with a function of the request's
parameters (MAST's path look-up answers only the URIs asked for). Requests are
logged, so tests can check what was asked and that the cache answered instead.

Examples
--------
>>> import urllib.request
>>> with ArchiveServer() as server:
...     server.add("GET", "/ping", {"q": "1"}, body=b"pong", content_type="text/plain")
...     urllib.request.urlopen(f"{server.url}/ping?q=1").read(), server.requests("/ping")
(b'pong', [{'q': '1'}])
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = ["ArchiveServer", "Match", "Route", "add_mast_survey_routes", "mast_filter",
           "mast_request", "path_lookup_reply"]

VOTABLE = "application/x-votable+xml"

#: A parameter's wanted value, or a predicate on it.
Match = str | Callable[[str], bool]
#: A reply computed from the request's parameters (every value of each).
Reply = Callable[[Mapping[str, list[str]]], bytes]


@dataclass
class Route:
    """One recorded reply and the requests it answers."""

    method: str
    path: str
    match: Mapping[str, Match]
    body: bytes | Reply
    status: int = 200
    content_type: str = VOTABLE

    def accepts(self, method: str, path: str, params: Mapping[str, str]) -> bool:
        """Whether this route answers the request."""
        if (method, path) != (self.method, self.path):
            return False
        for key, want in self.match.items():
            got = params.get(key)
            if got is None or not (want(got) if callable(want) else got == want):
                return False
        return True


@dataclass
class ArchiveServer:
    """Recorded replies keyed by method, path and request parameters; logs requests.

    Use it as a context manager (or :meth:`start` / :meth:`stop`); :attr:`url` is
    ``http://127.0.0.1:<port>``.
    """

    routes: list[Route] = field(default_factory=list)
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _httpd: Any = None
    _thread: threading.Thread | None = None

    def add(self, method: str, path: str, match: Mapping[str, Match], *,
            file: str | Path = "", body: bytes | Reply = b"", status: int = 200,
            content_type: str = VOTABLE) -> None:
        """Add a route answering with ``file``'s bytes or ``body``."""
        data = Path(file).read_bytes() if file else body
        self.routes.append(Route(method, path, match, data, status, content_type))

    def requests(self, path: str) -> list[dict[str, str]]:
        """Parameters of the requests made to ``path`` (first value of each)."""
        return [params for _, p, params in self.log if p == path]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                parts = urllib.parse.urlsplit(self.path)
                raw = parts.query
                if method == "POST":
                    raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                every = urllib.parse.parse_qs(raw)
                params = {k: v[0] for k, v in every.items()}
                server.log.append((method, parts.path, params))
                route = next((r for r in server.routes
                              if r.accepts(method, parts.path, params)), None)
                if route is None:
                    body, status, ctype = (f"no recorded reply for {method} {parts.path} "
                                           f"{params}").encode(), 404, "text/plain"
                else:
                    body = route.body(every) if callable(route.body) else route.body
                    status, ctype = route.status, route.content_type
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mast_request(service: str, check: Callable[[dict], bool] = lambda p: True) -> Match:
    """A predicate on the MAST portal's ``request`` parameter: its service and params."""
    def match(text: str) -> bool:
        req = json.loads(text)
        return req.get("service") == service and check(req.get("params", {}))
    return match


def mast_filter(params: Mapping[str, Any], name: str) -> list[str]:
    """The values of one filter of a MAST ``Mast.Caom.Filtered`` request's ``filters``."""
    for entry in params.get("filters", []):
        if entry.get("paramName") == name:
            return [str(v) for v in entry.get("values", [])]
    return []


def path_lookup_reply(recorded: Mapping[str, Any]) -> Reply:
    """MAST's ``/api/v0.1/path_lookup/`` answering the ``uri`` values asked, from a
    recorded mapping (URIs it does not hold get ``{"status_code": 404, "path": null}``)."""
    def reply(params: Mapping[str, list[str]]) -> bytes:
        missing = {"status_code": 404, "path": None}
        return json.dumps({u: recorded.get(u, missing) for u in params.get("uri", [])}).encode()
    return reply


def _products_reply(files: list[Path]) -> Reply:
    """``Mast.Caom.Products``: the recorded product rows of the obsids asked for."""
    replies = [json.loads(f.read_text()) for f in files]

    def reply(params: Mapping[str, list[str]]) -> bytes:
        asked = set(json.loads(params["request"][0])["params"]["obsid"].split(","))
        rows = [r for rep in replies for r in rep["data"] if str(r["obsID"]) in asked]
        out = dict(replies[0], data=rows)
        out["paging"] = dict(out["paging"], rows=len(rows), rowsFiltered=len(rows),
                             rowsTotal=len(rows))
        return json.dumps(out).encode()
    return reply


def add_mast_survey_routes(server: ArchiveServer, directory: str | Path) -> None:
    """Serve the recorded MAST replies of the simulated surveys (``DEMO_SURVEYS``).

    ``directory`` holds them (``tests/data/archive``): the portal's columns
    configuration, ``Mast.Caom.Filtered`` observations by proposal id (1345, 1837;
    any other id: no rows) and by HLSP provenance name (CEERS), their products
    (``Mast.Caom.Products``, the rows of the obsids asked) and MAST's path look-up.
    """
    d = Path(directory)
    server.add("POST", "/portal/Mashup/Mashup.asmx/columnsconfig", {},
               file=d / "mast_columnsconfig_provenance.json", content_type="application/json")
    by_proposal = {"1345": "mast_jwst_ceers_observations.json",
                   "1837": "mast_jwst_primer_observations.json"}
    for proposal, name in by_proposal.items():
        server.add("POST", "/api/v0/invoke", {"request": mast_request(
            "Mast.Caom.Filtered", lambda p, k=proposal: mast_filter(p, "proposal_id") == [k])},
            file=d / name, content_type="application/json")
    server.add("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Filtered", lambda p: mast_filter(p, "provenance_name") == ["CEERS"])},
        file=d / "mast_hlsp_ceers_observations.json", content_type="application/json")
    server.add("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Filtered", lambda p: bool(mast_filter(p, "proposal_id")
                                            or mast_filter(p, "provenance_name")))},
        file=d / "mast_jwst_empty_observations.json", content_type="application/json")
    products = [d / "mast_jwst_ceers_products.json", d / "mast_jwst_primer_products.json"]
    known = {str(r["obsID"]) for f in products for r in json.loads(f.read_text())["data"]}
    server.add("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Products", lambda p: set(str(p.get("obsid", "")).split(",")) <= known)},
        body=_products_reply(products), content_type="application/json")
    lookup = json.loads((d / "mast_path_lookup_surveys.json").read_text())
    server.add("GET", "/api/v0.1/path_lookup/", {}, body=path_lookup_reply(lookup),
               content_type="application/json")
