"""Benchmark (not a test): QoS 1 publish round trip on loopback TLS against the real local hub,
stock umqtt.simple 1.3.4 (several small writes per packet) vs firmware/runtime/link.py (one
write per packet). Also the device's heap: free GC heap under -X heapsize with .mpy files.

    .venv/bin/python -m tests.integration.bench_publish [N]
"""
import json
import os
import subprocess
import sys
import tempfile

from tests.hub.conftest import running_hub
from tests.integration.device_harness import REPO, micropypath, micropython

SCRIPT = r"""
import time, ssl
from umqtt.simple import MQTTClient
from firmware.runtime.link import _Client
from firmware.iothub import sas, topics
host, port, dev, key, n = %r
der = open(%r, "rb").read()
params = {"cert_reqs": ssl.CERT_REQUIRED, "cadata": der, "server_hostname": host}
tok = sas.token(sas.device_resource(host, dev), key, int(time.time()) + 3600)
user = topics.username(host, dev)
topic = topics.telemetry(dev, {"$.mid": "bench", "messageType": "bench"})
body = b'{"type":"orderRequest","orderRequestId":"0123456789abcdef","sku":"COFFEE-1KG","quantity":1,"createdAt":1800000000,"seq":1}'

c = MQTTClient(dev, host, port, user=user, password=tok, keepalive=60, ssl=True, ssl_params=params)
c.set_callback(lambda t, m: None)
c.connect(clean_session=False)
t = time.ticks_us()
for i in range(n):
    c.publish(topic, body, qos=1)
stock = time.ticks_diff(time.ticks_us(), t) / n / 1000
c.disconnect()

c = _Client(dev, host, port, user, 60, params, 10)
c.pswd = tok
c.connect()
t = time.ticks_us()
for i in range(n):
    c.publish(topic, body, qos=1, pid=i + 1)
    while not c.acked:
        c.wait_msg()
    c.acked.pop()
single = time.ticks_diff(time.ticks_us(), t) / n / 1000
c.disconnect()
print("RESULT", stock, single)
"""


def main(n=50):
    with tempfile.TemporaryDirectory() as tmp, running_hub(os.path.join(tmp, "hub")) as hub:
        key = hub.add_device("bench-1")
        script = SCRIPT % ((hub.host, hub.mqtt_port, "bench-1", key, n), hub.ca_der)
        r = subprocess.run([micropython(), "-c", script], cwd=REPO, capture_output=True,
                           text=True, env=dict(os.environ, MICROPYPATH=micropypath()), timeout=600)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
        if not line:
            sys.exit("benchmark failed:\n" + r.stdout + r.stderr)
        stock, single = map(float, line[0].split()[1:])
        print(json.dumps({"publishes": n, "stock_umqtt_ms_per_qos1_publish": round(stock, 2),
                          "single_write_ms_per_qos1_publish_incl_puback": round(single, 2)}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
