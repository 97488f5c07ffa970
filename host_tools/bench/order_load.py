"""Order load on the whole cloud path: N simulated devices (MQTT 3.1.1 over TLS, QoS 1, one
asyncio loop) publish orderRequests as the firmware does; the local hub stores them, the order
service reads them from the Event Hubs-compatible endpoint, places the orders and sends
'accepted' over AMQP; the devices time request -> 'accepted'.

    throughput(hub_dir, orders_dir, devices, seconds)  -> orders/s, with every request answered
    latency(hub_dir, orders_dir, devices, rate, seconds) -> request -> 'accepted' percentiles

Devices are registered straight in the hub's SQLite file and get a profile in the order
service's before `orders serve` starts (register_devices).
"""
import asyncio
import json
import os
import ssl
import struct
import time

from firmware.app import schemas
from firmware.iothub import mqtt, sas, topics

KEEPALIVE = 120


def _packet(encode, *args):
    """One packet from the firmware's encoders (firmware/iothub/mqtt.py), as bytes."""
    return bytes(encode(bytearray(0), *args))


def register_devices(hub_dir, orders_dir, count, prefix="load"):
    """Register `count` devices in the hub and give each a customer profile; returns {id: key}."""
    from host_tools.cloud.hub.hub import ensure_data_dir
    from host_tools.cloud.hub.store import Store as HubStore
    from host_tools.cloud.orders.store import Store as OrderStore
    paths, _ = ensure_data_dir(hub_dir)
    hub = HubStore(paths["db"])
    orders = OrderStore(orders_dir)
    keys = {}
    try:
        for i in range(count):
            dev_id = "%s-%04d" % (prefix, i)
            dev = hub.get_device(dev_id) or hub.add_device(dev_id)
            keys[dev_id] = dev["primary_key"]
            with orders.transaction():
                orders.set_profile(dev_id, "Load %d" % i, "%d Bench Road" % i, "standard", "tok_load", time.time())
    finally:
        hub.close()
        orders.close()
    return keys


class Device:
    def __init__(self, dev_id, key, host, port, ssl_ctx, on_status):
        self.id, self.key, self.host, self.port, self.ssl = dev_id, key, host, port, ssl_ctx
        self.on_status = on_status
        self.pid = 0
        self.writer = None
        self.subscribed = asyncio.Event()
        self.reader_task = None
        self.seq = 0

    async def connect(self):
        reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                                            server_hostname="localhost")
        token = sas.token(sas.device_resource(self.host, self.id), self.key, int(time.time()) + 3600)
        username = topics.username(self.host, self.id)
        self.writer.write(_packet(mqtt.connect, self.id.encode(), username.encode(),
                                  token.encode(), KEEPALIVE, True))
        head = await reader.readexactly(4)
        if head[0] != 0x20 or head[3] != 0:
            raise RuntimeError("%s: CONNACK %r" % (self.id, head))
        self.reader_task = asyncio.ensure_future(self._read(reader))
        self.writer.write(_packet(mqtt.subscribe, 1, [(topics.c2d_filter(self.id).encode(), 1)]))
        await asyncio.wait_for(self.subscribed.wait(), 30)

    async def _read(self, reader):
        while True:
            b0 = (await reader.readexactly(1))[0]
            mult, length = 1, 0
            while True:
                b = (await reader.readexactly(1))[0]
                length += (b & 127) * mult
                mult *= 128
                if not b & 128:
                    break
            data = await reader.readexactly(length)
            kind = b0 & 0xF0
            if kind == 0x90:
                self.subscribed.set()
            elif kind == 0x30:
                tlen = struct.unpack(">H", data[:2])[0]
                i = 2 + tlen
                if b0 & 0x06:
                    pid = data[i:i + 2]
                    i += 2
                    self.writer.write(b"\x40\x02" + pid)
                try:
                    msg = json.loads(data[i:])
                except ValueError:
                    continue
                self.on_status(self.id, msg, time.monotonic())

    def order(self, request_id):
        self.seq += 1
        self.pid = self.pid % 65535 + 1
        body = schemas.order_request(request_id, "COFFEE-1KG", 1, int(time.time()), self.seq)
        topic = topics.telemetry(self.id, schemas.props(request_id, schemas.ORDER))
        self.writer.write(_packet(mqtt.publish, topic.encode(), body, 1, self.pid, False))

    async def close(self):
        if self.reader_task:
            self.reader_task.cancel()
        if self.writer:
            self.writer.write(b"\xe0\x00")
            self.writer.close()


class Load:
    def __init__(self, hub_dir, keys):
        with open(os.path.join(hub_dir, "hub.json")) as f:
            info = json.load(f)
        self.host, self.port = info["host"], info["mqtt_port"]
        self.ssl = ssl.create_default_context(cafile=os.path.join(hub_dir, "certs", "ca.pem"))
        self.keys = keys
        self.sent = {}          # request id -> monotonic send time
        self.accepted = {}      # request id -> monotonic time of the first 'accepted'
        self.repeats = 0
        self.devices = []
        self.waiters = {}
        self._n = 0
        self.run_id = int.from_bytes(os.urandom(4), "big")

    def _on_status(self, dev_id, msg, now):
        rid = msg.get("orderRequestId")
        if msg.get("status") != "accepted" or rid not in self.sent:
            return
        if rid in self.accepted:
            self.repeats += 1
            return
        self.accepted[rid] = now
        waiter = self.waiters.pop(rid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    async def connect(self):
        self.devices = [Device(d, k, self.host, self.port, self.ssl, self._on_status) for d, k in self.keys.items()]
        for i in range(0, len(self.devices), 50):
            await asyncio.gather(*(d.connect() for d in self.devices[i:i + 50]))

    def _request(self, dev):
        self._n += 1
        rid = "%08x%08x" % (self.run_id, self._n)
        self.sent[rid] = time.monotonic()
        dev.order(rid)
        return rid

    async def closed_loop(self, seconds, window):
        """Each device keeps `window` requests waiting for 'accepted'; returns orders/s."""
        loop = asyncio.get_running_loop()
        stop_at = time.monotonic() + seconds

        async def run(dev):
            while time.monotonic() < stop_at:
                rid = self._request(dev)
                fut = self.waiters[rid] = loop.create_future()
                try:
                    await asyncio.wait_for(fut, 30)
                except asyncio.TimeoutError:
                    return
        start = time.monotonic()
        await asyncio.gather(*(run(d) for d in self.devices for _ in range(window)))
        elapsed = time.monotonic() - start
        done = sum(1 for rid, t in self.accepted.items() if self.sent[rid] >= start)
        return done / elapsed

    async def open_loop(self, rate, seconds):
        """`rate` requests/s spread over the devices; returns the latencies in ms."""
        interval = 1.0 / rate
        start = time.monotonic()
        rids = []
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rids.append(self._request(self.devices[i % len(self.devices)]))
        await self.settle(rids)
        return [(self.accepted[r] - self.sent[r]) * 1000 for r in rids if r in self.accepted]

    async def settle(self, rids=None, timeout=60):
        deadline = time.monotonic() + timeout
        rids = list(self.sent) if rids is None else rids
        while time.monotonic() < deadline and any(r not in self.accepted for r in rids):
            await asyncio.sleep(0.05)

    async def close(self):
        for d in self.devices:
            await d.close()


def run(hub_dir, keys, mode, **kw):
    """mode 'throughput' (seconds, window) -> (orders/s, requests, answered, repeats);
    'latency' (rate, seconds) -> (latencies ms, requests, answered, repeats)."""
    async def main():
        load = Load(hub_dir, keys)
        await load.connect()
        try:
            if mode == "throughput":
                result = await load.closed_loop(kw["seconds"], kw["window"])
                await load.settle()
            else:
                result = await load.open_loop(kw["rate"], kw["seconds"])
            return result, len(load.sent), len(load.accepted), load.repeats, list(load.sent)
        finally:
            await load.close()
    return asyncio.run(main())


def bench(work, counts=(1, 50, 200), seconds=10.0, rate=100, latency_devices=50, log=print):
    """Start a hub and `orders serve` in `work`, run the loads, return the figures."""
    import shutil
    from host_tools import processes
    shutil.rmtree(work, ignore_errors=True)
    hub_dir, orders_dir = os.path.join(work, "hub"), os.path.join(work, "orders")
    os.makedirs(orders_dir)
    services = []
    results = {"throughput": {}, "latency": None}
    try:
        hub, _ = processes.start(["hub", "--data", hub_dir, "--mqtt-port", "0", "--api-port", "0",
                                  "--amqp-port", "0"], os.path.join(work, "hub.log"), name="hub")
        services.append(hub)
        keys = register_devices(hub_dir, orders_dir, max(tuple(counts) + (latency_devices,)))
        orders, _ = processes.start(["orders", "serve", "--hub-data", hub_dir, "--data", orders_dir,
                                     "--timeline", "manual", "--log-level", "WARNING"],
                                    os.path.join(work, "serve.log"), name="order service")
        services.append(orders)
        requests = answered = repeats = 0
        for n in counts:
            some = dict(list(keys.items())[:n])
            window = max(1, 200 // n)
            rate_, sent, got, rep, _ = run(hub_dir, some, "throughput", seconds=seconds, window=window)
            results["throughput"][n] = {"orders_per_s": rate_, "window": window, "requests": sent, "answered": got}
            requests, answered, repeats = requests + sent, answered + got, repeats + rep
            log("  %4d devices (%3d open requests each): %7.1f orders/s  (%d requests, %d answered)"
                % (n, window, rate_, sent, got))
        some = dict(list(keys.items())[:latency_devices])
        lat, sent, got, rep, _ = run(hub_dir, some, "latency", rate=rate, seconds=seconds)
        requests, answered, repeats = requests + sent, answered + got, repeats + rep
        lat.sort()

        def pct(q):
            return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")
        results["latency"] = {"rate": rate, "devices": latency_devices, "requests": sent, "answered": got,
                              "median_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}
        log("  %d orders/s offered over %d devices: request -> accepted median %.1f ms, p95 %.1f ms, "
            "p99 %.1f ms (%d of %d answered)" % (rate, latency_devices, pct(0.5), pct(0.95), pct(0.99), got, sent))
    finally:
        for p in reversed(services):
            processes.stop(p)
    from host_tools.cloud.orders.store import Store as OrderStore
    store = OrderStore(orders_dir)
    try:
        placed = store.db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        distinct = store.db.execute("SELECT COUNT(DISTINCT device_id || '/' || request_id) FROM orders").fetchone()[0]
    finally:
        store.close()
    results["exactly_once"] = {"requests": requests, "answered": answered, "orders": placed,
                               "distinct": distinct, "repeated_accepted": repeats,
                               "held": placed == distinct == requests == answered}
    log("  exactly once: %d requests, %d orders (%d distinct), %d answered, %d repeated 'accepted' -> %s"
        % (requests, placed, distinct, answered, repeats, "held" if results["exactly_once"]["held"] else "BROKEN"))
    return results


if __name__ == "__main__":
    import sys
    from host_tools.processes import REPO
    bench(os.path.join(REPO, "build", "bench-orders"), seconds=float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
