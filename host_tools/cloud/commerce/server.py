"""Run the commerce backend: HTTPS API, the timeline, and event deliveries, on one asyncio loop.

`Server(...).start()` in an event loop (or `ServerThread` from synchronous code and tests)
binds the port, then a pump runs due timeline steps and due deliveries, waking when the API
changed something, when the next step or retry is due, or every `poll` seconds (so that
changes the CLI wrote to the database go out too).
"""
import asyncio
import logging
import os
import ssl
import threading
import time

import aiohttp
from aiohttp import web

from host_tools.cloud.commerce import api, tokens
from host_tools.cloud.commerce.backend import Commerce
from host_tools.cloud.commerce.delivery import Deliverer
from host_tools.cloud.commerce.store import Store

log = logging.getLogger("host_tools.cloud.commerce")


def server_ssl(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class Server:
    def __init__(self, data_dir, catalogue, schedule, cert, key, ca, host="127.0.0.1", port=0,
                 clock=time.time, token_lifetime=tokens.DEFAULT_LIFETIME, retry_base=1.0,
                 retry_max=30.0, delivery_timeout=10.0, poll=0.5, validation_timeout=30.0,
                 middlewares=()):
        """middlewares: extra aiohttp middlewares around the API (observers in tests)."""
        self.store = Store(data_dir)
        with self.store.transaction():
            self.store.set_meta("timeline", schedule.as_dict())
        self.commerce = Commerce(self.store, catalogue, schedule, clock)
        self.key = tokens.load_or_create_key(data_dir)
        self.cert, self.tls_key, self.ca = cert, key, ca
        self.host, self.port = host, port
        self.token_lifetime = token_lifetime
        self.deliverer = Deliverer(self.store, clock, retry_base, retry_max, delivery_timeout)
        self.poll = poll
        self.validation_timeout = validation_timeout
        self.middlewares = tuple(middlewares)
        self.url = None
        self._runner = self._session = self._pump = self._wake = None
        self._stopping = False

    async def start(self):
        client_ssl = ssl.create_default_context(cafile=self.ca)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl))
        self.issuer = tokens.Issuer(self.key, None, self.token_lifetime)
        app = api.make_app(self.commerce, self.issuer, self._session, self.validation_timeout,
                           self.middlewares)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port,
                           ssl_context=server_ssl(self.cert, self.tls_key))
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = self._runner.addresses[0][1]
        self.url = f"https://{self.host}:{self.port}"
        self.issuer.issuer = self.url
        self._wake = asyncio.Event()
        self.commerce.on_change = self._wake.set
        self._pump = asyncio.create_task(self._run_pump())
        return self.url

    async def _run_pump(self):
        trouble = None
        while not self._stopping:
            try:
                self.commerce.run_due()
                await self.deliverer.deliver_due(self._session)
                if trouble:
                    log.warning("recovered from: %s", trouble)
                trouble = None
            except Exception as exc:  # storage trouble or a bug: keep serving, loudly, once
                if trouble is None:
                    log.exception("commerce pump failed; retrying")
                trouble = f"{type(exc).__name__}: {exc}"
            wait = self.poll
            now = self.commerce.clock()
            for due in (self.store.next_due(), self.deliverer.next_wakeup()):
                if due is not None:
                    wait = min(wait, max(0.0, due - now))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def stop(self):
        if self._pump is not None:
            # a flag, not Task.cancel(): on 3.11 wait_for() can swallow a cancellation that
            # races with the wake-up, and the pump would then run on
            self._stopping = True
            self._wake.set()
            await self._pump
            self._pump = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.store.close()


class ServerThread:
    """A Server on its own event loop in a thread, for synchronous callers (tests)."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None

    def _call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self):
        self.thread.start()

        async def make():
            self.server = Server(*self._args, **self._kwargs)
            return await self.server.start()
        return self._call(make())

    def stop(self):
        if self.server is not None:
            self._call(self.server.stop())
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
