# MicroPython side of the SDK comparison (run by host_tools/bench, never imported by CPython):
# connect with the firmware's own link, publish N order requests at QoS 1, each waiting for its
# PUBACK, then disconnect. Prints one JSON line. Usage: micropython mp_orders.py DEVICE_DIR N
import json
import random
import select
import sys
import time

from firmware.app import schemas
from firmware.iothub import topics
from firmware.runtime import storage
from firmware.runtime.link import Link
from host_tools.bench.rss import peak_rss_kib

folder, n = sys.argv[1], int(sys.argv[2])
cfg = storage.load_config(folder)
ca = storage.load_ca(folder, cfg)
link = Link(cfg["host"], cfg["port"], cfg["device_id"], storage.load_secrets(folder)["device_key"],
            ca, random.random)
acked = []


def handle(ev):
    if ev[0] == "puback":
        acked.append(ev[1])


def step():
    link.step(time.time(), handle)


t0 = time.ticks_us()
while not link.online():
    if time.ticks_diff(time.ticks_us(), t0) > 20000000:
        # e.g. too little heap for the TLS handshake: the link backs off and retries forever
        print("mp_orders: not online after 20 s:", link.stats)
        sys.exit(1)
    step()
    if not link.online():
        time.sleep_ms(10)
connect_us = time.ticks_diff(time.ticks_us(), t0)
step()                  # reads what connecting left inside TLS: pollable() is the TCP socket now
poller = select.poll()
poller.register(link.pollable(), select.POLLIN)   # what the device loop waits on
lat = []
for i in range(n):
    rid = "%016x" % random.getrandbits(32)
    topic = topics.telemetry(cfg["device_id"], schemas.props(rid, schemas.ORDER))
    body = schemas.order_request(rid, "COFFEE-1KG", 1, int(time.time()), i + 1)
    t = time.ticks_us()
    link.publish(topic, body, 1, rid)
    while rid not in acked:
        if not link.online():
            print("mp_orders: link lost while publishing:", link.stats)
            sys.exit(1)
        poller.poll(1000)   # sleep until the hub answers, no busy loop
        step()
    lat.append(time.ticks_diff(time.ticks_us(), t))
link.close()
print(json.dumps({"connect_us": connect_us, "publish_us": lat, "peak_rss_kib": peak_rss_kib()}))
