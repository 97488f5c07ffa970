# MicroPython side of "what of umqtt.simple the link uses" (run by host_tools/bench): the same
# jobs done by stock umqtt.simple and by the link's client (firmware/runtime/link.Client), same
# hub, same TLS. Prints one JSON line, milliseconds:
#   publish:   QoS 1 publish -> PUBACK, per publish (stock: several small writes per packet and
#              a blocking wait for the PUBACK; ours: one write, the PUBACK read by the decoder)
#   connect:   TCP + TLS + CONNECT -> CONNACK
#   subscribe: the four IoT Hub filters -> SUBACK (stock: one SUBSCRIBE per filter; ours: one)
#   ping:      PINGREQ -> PINGRESP (both write it with umqtt's ping(); stock reads the answer
#              with wait_msg(), ours with the decoder)
# Usage: micropython mp_umqtt.py DEVICE_DIR N
import json
import select
import ssl
import sys
import time

from umqtt.simple import MQTTClient

from firmware.app import schemas
from firmware.iothub import mqtt, sas, topics
from firmware.runtime import storage
from firmware.runtime.link import Client

folder, n = sys.argv[1], int(sys.argv[2])
cfg = storage.load_config(folder)
host, port, dev = cfg["host"], cfg["port"], cfg["device_id"]
ca = storage.load_ca(folder, cfg)   # the local hub's root: one certificate, which stock umqtt takes
params = {"cert_reqs": ssl.CERT_REQUIRED, "cadata": ca[0], "server_hostname": host}
token = sas.token(sas.device_resource(host, dev), storage.load_secrets(folder)["device_key"],
                  int(time.time()) + 3600)
user = topics.username(host, dev)
rid = "0123456789abcdef"
topic = topics.telemetry(dev, schemas.props(rid, schemas.ORDER))
body = schemas.order_request(rid, "COFFEE-1KG", 1, int(time.time()), 1)
FILTERS = ((topics.c2d_filter(dev), 1), (topics.TWIN_RES_FILTER, 0),
           (topics.TWIN_DESIRED_FILTER, 0), (topics.METHODS_FILTER, 0))


def ms(fn, times=1):
    t = time.ticks_us()
    for i in range(times):
        fn(i)
    return time.ticks_diff(time.ticks_us(), t) / times / 1000


def stock_client():
    c = MQTTClient(dev, host, port, user=user, password=token, keepalive=60, ssl=True, ssl_params=params)
    c.set_callback(lambda t, m: None)
    return c


def stock_ping(i):
    c.ping()
    while c.sock.read(1) != b"\xd0":    # stock wait_msg() eats a PINGRESP and says nothing
        pass
    c.sock.read(1)


stock, ours = {}, {}
c = stock_client()
stock["connect"] = ms(lambda i: c.connect(clean_session=False))
stock["subscribe"] = ms(lambda i: [c.subscribe(f, q) for f, q in FILTERS])
stock["ping"] = ms(stock_ping, n)
stock["publish"] = ms(lambda i: c.publish(topic, body, qos=1), n)   # waits for its PUBACK
c.disconnect()


def wait_for(kind):
    # as the device loop does: sleep on the socket until it is readable, then read
    while c.check_msg(0) != kind:
        poller.poll(1000)


def our_publish(i):
    c.publish(topic, body, qos=1, pid=i + 1)
    wait_for(mqtt.PUBACK)


def our_ping(i):
    c.ping()                           # umqtt.simple's, as the link uses it
    wait_for(mqtt.PINGRESP)


c = Client(dev, host, port, user, 60, ca, host, 10)
c.pswd = token
ours["connect"] = ms(lambda i: c.connect())
poller = select.poll()
poller.register(c.raw, select.POLLIN)   # the TCP socket, as Link.pollable() gives it
ours["subscribe"] = ms(lambda i: c.subscribe_all(FILTERS))
ours["ping"] = ms(our_ping, n)
ours["publish"] = ms(our_publish, n)
c.disconnect()
print(json.dumps({"stock_umqtt_ms": stock["publish"], "link_ms": ours["publish"],
                  "stock_umqtt": stock, "link": ours}))
