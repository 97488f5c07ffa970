"""CPython side of the comparison: the official azure-iot-device SDK does what mp_orders.py does.

Connect, send N order requests (QoS 1: send_message returns after the PUBACK), disconnect.
Usage: python -m host_tools.bench.sdk_orders CONNECTION_STRING_FILE CA_PEM N   (one JSON line)
"""
import json
import sys
import time
import uuid

from azure.iot.device import IoTHubDeviceClient, Message

from host_tools.bench.rss import peak_rss_kib


def main(conn_file, ca_pem, n):
    with open(conn_file) as f:
        conn = f.read().strip()
    with open(ca_pem) as f:
        ca = f.read()
    t0 = time.perf_counter()
    client = IoTHubDeviceClient.create_from_connection_string(conn, server_verification_cert=ca)
    client.connect()
    connect_us = int((time.perf_counter() - t0) * 1e6)
    lat = []
    for i in range(n):
        rid = uuid.uuid4().hex[:16]
        msg = Message(json.dumps({"type": "orderRequest", "orderRequestId": rid, "sku": "COFFEE-1KG",
                                  "quantity": 1, "createdAt": int(time.time()), "seq": i + 1}))
        msg.message_id, msg.content_type, msg.content_encoding = rid, "application/json", "utf-8"
        msg.custom_properties["messageType"] = "orderRequest"
        t = time.perf_counter()
        client.send_message(msg)
        lat.append(int((time.perf_counter() - t) * 1e6))
    client.shutdown()
    print(json.dumps({"connect_us": connect_us, "publish_us": lat, "peak_rss_kib": peak_rss_kib()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
