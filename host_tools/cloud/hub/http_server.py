"""A small HTTP/1.1 server over asyncio streams (TLS), enough for the hub's JSON service API.

Keep-alive, Content-Length and chunked request bodies; one request at a time per connection.
handler(Request) -> Response, awaited.
"""
import asyncio
import json
import logging
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("host_tools.cloud.hub")

MAX_BODY = 1024 * 1024
_MAX_HEADERS = 100
_IDLE_TIMEOUT = 120


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


async def _read_request(reader):
    line = await reader.readline()
    if not line:
        return None
    try:
        method, target, version = line.decode("latin-1").split()
    except ValueError:
        raise HttpError(400, "bad request line") from None
    headers, raw = {}, []
    for _ in range(_MAX_HEADERS + 1):
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, sep, value = h.decode("latin-1").partition(":")
        if not sep:
            raise HttpError(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
        raw.append((name.strip(), value.strip()))
    else:
        raise HttpError(431, "too many headers")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            if len(body) + size > MAX_BODY:
                raise HttpError(413, "body too large")
            body += await reader.readexactly(size)
            await reader.readline()
        body = bytes(body)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, "body too large")
        body = await reader.readexactly(length) if length else b""
    keep = version.upper() == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return Request(method.upper(), target, headers, body, raw), keep


def _encode(resp, keep):
    head = ["HTTP/1.1 %d %s" % (resp.status, HTTPStatus(resp.status).phrase),
            "Content-Length: %d" % len(resp.body),
            "Connection: %s" % ("keep-alive" if keep else "close")]
    if resp.body:
        head.append("Content-Type: %s" % resp.content_type)
    head += ["%s: %s" % kv for kv in resp.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


async def serve(handler, host, port, ssl_context):
    async def on_connection(reader, writer):
        try:
            while True:
                try:
                    got = await asyncio.wait_for(_read_request(reader), _IDLE_TIMEOUT)
                except HttpError as exc:
                    writer.write(_encode(exc.response(), False))
                    break
                if got is None:
                    break
                request, keep = got
                try:
                    resp = await handler(request)
                except HttpError as exc:
                    resp = exc.response()
                except Exception:
                    log.exception("service API: %s %s failed", request.method, request.path)
                    resp = HttpError(500, "internal error").response()
                writer.write(_encode(resp, keep))
                await writer.drain()
                if not keep:
                    break
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    return await asyncio.start_server(on_connection, host, port, ssl=ssl_context)
