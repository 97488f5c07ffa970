"""The HTTPS server under the hub's service API: aiohttp's low-level server (HTTP/1.1 parsing,
keep-alive, chunked bodies, limits, graceful shutdown) and the small Request/Response the
service API is written against. handler(Request) -> Response, awaited.

A stop gives requests in flight (a long poll, a method call waiting for its device) a moment
to finish, then ends them quietly: no traceback when the hub stops under a client.
"""
import json
import logging
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("host_tools.cloud.hub")

MAX_BODY = 1024 * 1024
_IDLE_TIMEOUT = 120
_SHUTDOWN_S = 0.5   # how long requests in flight get when the hub stops


class Request:
    def __init__(self, method, target, headers, body, raw_headers=()):
        self.method = method
        parts = urlsplit(target)
        self.path = unquote(parts.path)
        self.segments = [unquote(s) for s in parts.path.split("/") if s]
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.headers = headers  # lower-case names, for lookups
        self.raw_headers = list(raw_headers)  # (name, value) as sent: names whose case matters
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "body is not valid JSON") from None
        except RecursionError:
            raise HttpError(400, "body is nested too deeply") from None


class Response:
    def __init__(self, status=200, body=b"", content_type="application/json; charset=utf-8", headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    @classmethod
    def json(cls, obj, status=200):
        return cls(status, json.dumps(obj).encode())


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status

    def response(self):
        # the shape IoT Hub's service uses for errors
        return Response.json({"Message": "ErrorCode:%s;%s" % (HTTPStatus(self.status).phrase.replace(" ", ""),
                                                               self), "ExceptionMessage": ""}, self.status)


class _OneLine(logging.Filter):
    """aiohttp logs each malformed request with a traceback at ERROR; a client's bad request
    is no hub error: one line, shown with --verbose only (like the MQTT side's refusals)."""

    def filter(self, record):
        if record.exc_info:
            if not log.isEnabledFor(logging.INFO):
                return False
            detail = " ".join(str(record.exc_info[1]).split())[:160]
            record.msg, record.args = "service API: %s (%s)" % (record.getMessage(), detail), None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_server_log = logging.getLogger("host_tools.cloud.hub.http")
_server_log.addFilter(_OneLine())


class Server:
    """A listening service API; `port` is where, close() stops it (awaited)."""

    def __init__(self, runner, site):
        self._runner, self._site = runner, site
        self.port = runner.addresses[0][1]

    async def close(self):
        await self._runner.cleanup()


async def serve(handler, host, port, ssl_context):
    """Listen on host:port with TLS; OSError when the port cannot be had."""
    from aiohttp import web

    async def on_request(request):
        try:
            body = await request.read()
        except web.HTTPException as exc:       # 413 past client_max_size, bad chunking...
            return _to_aiohttp(HttpError(exc.status, exc.reason or "bad request").response())
        req = Request(request.method, request.raw_path,
                      {k.lower(): v for k, v in request.headers.items()}, body,
                      [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers])
        try:
            resp = await handler(req)
        except HttpError as exc:
            resp = exc.response()
        except Exception:
            log.exception("service API: %s %s failed", req.method, req.path)
            resp = HttpError(500, "internal error").response()
        return _to_aiohttp(resp)

    # bodies as sent (C2D's Content-Encoding is a message property, not a transfer coding);
    # aiohttp's requests refuse bodies over 1 MiB (MAX_BODY) with 413
    server = web.Server(on_request, access_log=None, keepalive_timeout=_IDLE_TIMEOUT,
                        auto_decompress=False, logger=_server_log)
    runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Server(runner, site)


def _to_aiohttp(resp):
    from aiohttp import web
    headers = dict(resp.headers)
    if resp.body:
        headers["Content-Type"] = resp.content_type
    return web.Response(status=resp.status, body=resp.body, headers=headers)
