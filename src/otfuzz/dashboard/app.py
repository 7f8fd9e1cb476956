"""The dashboard's web application: pages, server-sent events, charts and report files.

A Starlette (ASGI) app over a `RunsReader`. Pages are rendered by Jinja2 with autoescape and
then kept current by a small script of our own (`static/dashboard.js`) that listens to
server-sent events and writes every value with `textContent`, never as markup: whatever a
device put into its identity or replies stays text. Charts are SVG documents drawn on the
server and shown as images, which cannot run code. A strict Content-Security-Policy (scripts,
styles and images from this server only; no inline code, no frames, no forms) holds even if
some escaping were wrong.

Access: on a loopback address the Host header must name loopback (no DNS rebinding from a
web page); on any other address every request needs the token, from `?token=` once (it is
then kept in a same-site cookie) or from that cookie. Nothing here starts, stops or changes a
campaign unless `allow_control` is set, and then only through `stop_run` callbacks the
process that runs the campaign registered.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from otfuzz.dashboard.data import CHARTS, RunsReader
from otfuzz.report.html import printable

TOKEN_COOKIE = "otfuzz_dashboard_token"
EVENT_INTERVAL_S = 1.0
STREAM_LIMIT_S = 3600.0  # one event stream lasts at most an hour; the browser reconnects by itself
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
REPORT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".pdf": "application/pdf",
                ".xml": "application/xml"}


@dataclass
class DashboardSettings:
    """Who may see the dashboard and what it may do."""

    root: Path
    token: str | None = None  # required on every request when set (any bind address but loopback)
    loopback: bool = True
    allow_control: bool = False
    stop_run: dict[Path, Callable[[], None]] = field(default_factory=dict)  # run folder -> stop it
    stopping: Callable[[], bool] = lambda: False  # the server is shutting down: end the event streams


class _Guard:
    """ASGI middleware: the token or loopback Host check, then the security headers on every answer."""

    def __init__(self, app: ASGIApp, settings: DashboardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        set_cookie = self.settings.token is not None and request.query_params.get("token") == self.settings.token

        async def with_headers(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                            (b"cache-control", b"no-store")]
                if set_cookie and refusal is None:
                    headers.append((b"set-cookie", f"{TOKEN_COOKIE}={self.settings.token}; Path=/; HttpOnly; "
                                                   "SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)

    def _refusal(self, request: Request) -> Response | None:
        token = self.settings.token
        if token is not None:
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("forbidden: this dashboard needs the token printed when it started "
                                         "(open the URL with ?token=...)\n", status_code=403)
        elif self.settings.loopback:
            if _host_name(request.headers.get("host") or "") not in LOOPBACK_HOSTS:
                return PlainTextResponse("forbidden: this dashboard answers only to loopback host names\n", status_code=403)
        return None


def _host_name(header: str) -> str:
    """'127.0.0.1:8626' -> '127.0.0.1', '[::1]:8626' -> '[::1]'."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("otfuzz.dashboard", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["printable"] = printable
    return env


def create_app(settings: DashboardSettings) -> ASGIApp:
    """The dashboard as an ASGI application."""
    reader = RunsReader(settings.root)
    env = _templates()

    async def in_thread(job: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(job)

    async def runs_page(request: Request) -> Response:
        rows = await in_thread(reader.rows)
        return HTMLResponse(env.get_template("runs.html.j2").render(rows=rows, root=str(settings.root)))

    async def run_page(request: Request) -> Response:
        name = request.path_params["name"]
        run_dir = reader.resolve(name)
        if run_dir is None:
            return PlainTextResponse(f"no run {name} here (yet: a run appears once it has recorded its start)\n",
                                     status_code=404)
        snap = await in_thread(lambda: reader.snapshot(run_dir))
        control = settings.allow_control and run_dir in settings.stop_run
        return HTMLResponse(env.get_template("run.html.j2").render(
            run=snap, name=name, charts=CHARTS, control=control, run_dir=str(run_dir)))

    async def runs_events(request: Request) -> Response:
        return _event_stream(lambda: in_thread(reader.rows), settings.stopping)

    async def run_events(request: Request) -> Response:
        run_dir = reader.resolve(request.path_params["name"])
        if run_dir is None:
            return PlainTextResponse("no such run\n", status_code=404)
        return _event_stream(lambda: in_thread(lambda: reader.snapshot(run_dir)), settings.stopping)

    async def run_json(request: Request) -> Response:
        run_dir = reader.resolve(request.path_params["name"])
        if run_dir is None:
            return PlainTextResponse("no such run\n", status_code=404)
        return JSONResponse(await in_thread(lambda: reader.snapshot(run_dir)))

    async def chart(request: Request) -> Response:
        run_dir = reader.resolve(request.path_params["name"])
        which = request.path_params["chart"]
        if run_dir is None or which not in CHARTS:
            return PlainTextResponse("no such chart\n", status_code=404)
        svg = await in_thread(lambda: reader.chart(run_dir, which))
        return Response(str(svg), media_type="image/svg+xml")

    async def report(request: Request) -> Response:
        run_dir = reader.resolve(request.path_params["name"])
        file = request.path_params["file"]
        from otfuzz.dashboard.data import reports_of

        if run_dir is None or file not in reports_of(run_dir):
            return PlainTextResponse("no such report\n", status_code=404)
        path = run_dir / "reports" / file
        return FileResponse(path, media_type=REPORT_TYPES.get(path.suffix, "application/octet-stream"))

    async def stop(request: Request) -> Response:
        run_dir = reader.resolve(request.path_params["name"])
        if not settings.allow_control:
            return PlainTextResponse("forbidden: start the dashboard with --allow-control to stop campaigns\n", status_code=403)
        if request.headers.get("x-otfuzz-control") != "stop":  # a cross-site form cannot set it
            return PlainTextResponse("forbidden: missing X-Otfuzz-Control header\n", status_code=403)
        if run_dir is None or run_dir not in settings.stop_run:
            return PlainTextResponse("this dashboard did not start that run, so it cannot stop it\n", status_code=409)
        settings.stop_run[run_dir]()
        return PlainTextResponse("stop requested\n")

    async def static(request: Request) -> Response:
        name = request.path_params["file"]
        if name not in STATIC:
            return PlainTextResponse("not found\n", status_code=404)
        text = resources.files("otfuzz.dashboard").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return Response(text, media_type=STATIC[name])

    routes = [
        Route("/", runs_page),
        Route("/events", runs_events),
        Route("/static/{file}", static),
        Route("/run/{name:path}/events", run_events),
        Route("/run/{name:path}/snapshot.json", run_json),
        Route("/run/{name:path}/chart/{chart}.svg", chart),
        Route("/run/{name:path}/reports/{file}", report),
        Route("/run/{name:path}/stop", stop, methods=["POST"]),
        Route("/run/{name:path}", run_page),
    ]
    return _Guard(Starlette(routes=routes), settings)


def _event_stream(produce: Callable[[], Awaitable[Any]], stopping: Callable[[], bool]) -> StreamingResponse:
    """Server-sent events: the snapshot whenever it changed, a comment line otherwise (keep-alive)."""

    async def events() -> AsyncIterator[str]:
        yield f"retry: {int(EVENT_INTERVAL_S * 1000)}\n\n"
        last = None
        ends = time.monotonic() + STREAM_LIMIT_S
        while time.monotonic() < ends and not stopping():
            text = json.dumps(await produce(), sort_keys=True)
            yield f"data: {text}\n\n" if text != last else ": unchanged\n\n"
            last = text
            await anyio.sleep(EVENT_INTERVAL_S)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})
