"""A real HTTPS Event Grid webhook subscriber for the commerce tests (aiohttp, in a thread).

It answers the validation handshake (or not, as told), records every delivery with its headers,
and can be told to fail the next N notifications with a given HTTP status.
"""
import asyncio
import json
import ssl
import threading
import time

from aiohttp import web

from host_tools.cloud.commerce import eventgrid


class WebhookPeer:
    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        self.deliveries = []      # (headers dict, body list) of notifications, in arrival order
        self.validations = []
        self.fail_next = []       # statuses to answer the next notifications with
        self.echo_code = True     # False: answer the handshake with a wrong code
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = None
        self._runner = None
        self._lock = threading.Lock()

    async def _handle(self, request):
        body = json.loads(await request.text())
        kind, value = eventgrid.read_delivery(request.headers, body)
        if kind == "validation":
            self.validations.append(dict(request.headers))
            code = value if self.echo_code else "wrong"
            return web.json_response(eventgrid.validation_response(code))
        with self._lock:
            if self.fail_next:
                status = self.fail_next.pop(0)
                self.deliveries.append((dict(request.headers), body, status))
                return web.Response(status=status, text="not now")
            self.deliveries.append((dict(request.headers), body, 200))
        return web.Response(status=200)

    def start(self):
        self.thread.start()

        async def go():
            app = web.Application()
            app.router.add_post("/events", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert, self.key)
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
            await site.start()
            return self._runner.addresses[0][1]
        port = asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        self.url = f"https://127.0.0.1:{port}/events"
        return self

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def acked(self):
        """The events acknowledged so far (200), oldest first."""
        with self._lock:
            return [b[0] for _, b, status in self.deliveries if status == 200]

    def wait_acked(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.acked()
            if len(got) >= n:
                return got
            time.sleep(0.01)
        raise AssertionError(f"expected {n} acknowledged events, got {self.acked()}")

    def wait_attempts(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.deliveries) >= n:
                    return list(self.deliveries)
            time.sleep(0.01)
        raise AssertionError(f"expected {n} delivery attempts, got {len(self.deliveries)}")
