# MicroPython side of "why not umqtt.simple as it is" (run by host_tools/bench): QoS 1 publish
# round trips, stock umqtt.simple (several small socket writes per packet) against the link's
# client (one write per packet), same hub, same TLS. Prints one JSON line (ms per publish).
# Usage: micropython mp_umqtt.py DEVICE_DIR N
import json
import ssl
import sys
import time

from umqtt.simple import MQTTClient

from firmware.app import schemas
from firmware.iothub import sas, topics
from firmware.runtime import storage
from firmware.runtime.link import _Client

folder, n = sys.argv[1], int(sys.argv[2])
cfg = storage.load_config(folder)
host, port, dev = cfg["host"], cfg["port"], cfg["device_id"]
params = {"cert_reqs": ssl.CERT_REQUIRED, "cadata": storage.load_ca(folder, cfg)[0], "server_hostname": host}
token = sas.token(sas.device_resource(host, dev), storage.load_secrets(folder)["device_key"],
                  int(time.time()) + 3600)
user = topics.username(host, dev)
rid = "0123456789abcdef"
topic = topics.telemetry(dev, schemas.props("orderRequest", rid))
body = schemas.order_request(rid, "COFFEE-1KG", 1, int(time.time()), 1)


def per_publish(publish):
    t = time.ticks_us()
    for i in range(n):
        publish(i)
    return time.ticks_diff(time.ticks_us(), t) / n / 1000


c = MQTTClient(dev, host, port, user=user, password=token, keepalive=60, ssl=True, ssl_params=params)
c.connect(clean_session=False)
stock = per_publish(lambda i: c.publish(topic, body, qos=1))   # waits for its PUBACK
c.disconnect()


def link_publish(i):
    c.publish(topic, body, qos=1, pid=i + 1)
    while not c.acked:
        c.wait_msg()
    c.acked.pop()


c = _Client(dev, host, port, user, 60, params, 10)
c.pswd = token
c.connect()
single = per_publish(link_publish)
c.disconnect()
print(json.dumps({"stock_umqtt_ms": stock, "link_ms": single}))
