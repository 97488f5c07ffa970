"""The orchestrator's Event Grid webhook: an HTTPS endpoint (aiohttp, its own thread and event
loop) that answers the subscription validation handshake and hands notifications to
`on_events(events)`, which returns the HTTP status to answer (200 once applied and committed,
503 to have Event Grid deliver again later).

The endpoint URL carries a random `code` query parameter (as an Azure Function's key does);
a request without it is refused 401 (which Event Grid does not retry).
"""
import asyncio
import hmac
import json
import logging
import secrets
import ssl
import threading

from aiohttp import web

from host_tools.cloud.commerce import eventgrid

log = logging.getLogger("host_tools.cloud.orders")
PATH = "/commerce/events"


class WebhookServer:
    def __init__(self, on_events, cert, key, host="127.0.0.1", port=0, code=None):
        self.on_events = on_events
        self.cert, self.key, self.host, self.port = cert, key, host, port
        self.code = code or secrets.token_urlsafe(24)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="commerce-webhook")
        self.url = None
        self._runner = None
        self.stats = {"validations": 0, "deliveries": 0, "refused": 0}

    async def _handle(self, request):
        if not hmac.compare_digest(request.query.get("code", ""), self.code):
            self.stats["refused"] += 1
            return web.json_response({"error": "missing or wrong code"}, status=401)
        try:
            body = json.loads(await request.text())
            kind, value = eventgrid.read_delivery(request.headers, body)
        except (ValueError, eventgrid.BadDelivery) as exc:
            self.stats["refused"] += 1
            log.warning("webhook refused a delivery: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        if kind == "validation":
            self.stats["validations"] += 1
            log.info("answered the Event Grid validation handshake for %s",
                     request.headers.get(eventgrid.HEADER_SUBSCRIPTION))
            return web.json_response(eventgrid.validation_response(value))
        self.stats["deliveries"] += 1
        status = await self.loop.run_in_executor(None, self.on_events, value)
        return web.Response(status=status)

    def start(self):
        self.thread.start()

        async def go():
            app = web.Application(client_max_size=256 * 1024)
            app.router.add_post(PATH, self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, self.key)
            await web.TCPSite(self._runner, self.host, self.port, ssl_context=context).start()
            return self._runner.addresses[0][1]
        try:
            self.port = asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)
        except OSError as exc:
            self.stop()
            raise OSError(f"webhook cannot listen on {self.host}:{self.port}: "
                          f"{exc.strerror}") from None
        self.url = f"https://{self.host}:{self.port}{PATH}?code={self.code}"
        return self.url

    def stop(self):
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(15)
            self._runner = None
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()
