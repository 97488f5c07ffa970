"""Fault injection (test tooling): the hub gives the answers IoT Hub gives under load or failure."""
import json

import pytest

from tests.cloud.hub.conftest import running_hub, wait_for
from tests.cloud.hub.mqtt_peer import (closed_by_peer, connect_packet, publish_packet, puback_packet, raw_device,
                                       read_packet, read_publish, subscribe_packet, tls_socket, twin_request)
from tests.cloud.hub.test_cli import cli

GET = "$iothub/twin/GET/?$rid=%s"
PATCH = "$iothub/twin/PATCH/properties/reported/?$rid=%s"


def _twin_device(hub, device_id):
    key = hub.add_device(device_id)
    s = raw_device(hub, device_id, key)
    s.sendall(subscribe_packet("$iothub/twin/res/#"))
    assert read_packet(s)[0] == 9
    return s


def test_twin_get_429_from_the_command_line(tmp_path):
    with running_hub(tmp_path / "hub", extra_args=["--inject", "twin_get=429:2"]) as hub:
        s = _twin_device(hub, "g1")
        assert [twin_request(s, GET % i, b" ", str(i))[0] for i in range(3)] == [429, 429, 200]
        s.close()


def test_inject_on_a_running_hub(tmp_path):
    with running_hub(tmp_path / "hub") as hub:
        s = _twin_device(hub, "p1")
        out = cli("hub", "inject", "twin_patch=503:1", "twin_get=500", "--data", hub.data_dir)
        assert json.loads(out.stdout) == {"twin_patch": {"value": 503, "count": 1},
                                          "twin_get": {"value": 500, "count": 1}}
        assert twin_request(s, PATCH % "1", b'{"a": 1}', "1")[0] == 503
        assert twin_request(s, PATCH % "2", b'{"a": 1}', "2")[0] == 204
        assert twin_request(s, GET % "3", b"", "3")[0] == 500
        assert twin_request(s, GET % "4", b"", "4")[0] == 200
        assert json.loads(cli("hub", "inject", "--data", hub.data_dir).stdout) == {}
        cli("hub", "inject", "drop=3", "--data", hub.data_dir)
        assert json.loads(cli("hub", "--data", hub.data_dir, "inject", "drop=off").stdout) == {}
        s.close()


@pytest.mark.parametrize("spec", ["twin_get=429:x", "twin_get=200", "nonsense=1", "drop=-1", "connect=9",
                                  "dps_register=200", "dps_status=429:x"])
def test_bad_fault_is_one_line_and_exit_2(tmp_path, spec):
    r = cli("hub", "inject", spec, "--data", str(tmp_path), check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = cli("hub", "--data", str(tmp_path), "--inject", spec, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_connect_answered_connack_3(hub):
    key = hub.add_device("c1")
    hub.service.inject_faults(["connect=3:1"])
    s = tls_socket(hub)
    s.sendall(connect_packet("c1", hub.username("c1"), hub.device_token("c1", key)))
    ptype, _, body = read_packet(s)
    assert ptype == 2 and body[1] == 3  # CONNACK 3: server unavailable
    s.close()
    raw_device(hub, "c1", key).close()  # the next one is accepted


def test_c2d_lock_fault_loses_a_puback_so_the_message_comes_back(tmp_path):
    with running_hub(tmp_path / "hub", extra_args=["--c2d-lock-seconds", "2", "--inject", "c2d_lock=1"]) as hub:
        key = hub.add_device("l1")
        hub.service.send_c2d("l1", b"once")
        s = raw_device(hub, "l1", key)
        s.sendall(subscribe_packet("devices/l1/messages/devicebound/#"))
        _, pid, _, body, _ = read_publish(s)
        s.sendall(puback_packet(pid))  # lost by the hub
        _, pid2, _, body2, _ = read_publish(s, timeout=15)
        assert body2 == b"once"
        s.sendall(puback_packet(pid2))
        wait_for(lambda: hub.service.get_device("l1")["cloudToDeviceMessageCount"] == 0, what="completed")
        s.close()


def test_drop_closes_the_connection_mid_stream(hub):
    key = hub.add_device("d1")
    hub.service.inject_faults(["drop=1"])
    s = raw_device(hub, "d1", key)
    s.sendall(publish_packet("devices/d1/messages/events/", b"lost", qos=1))
    assert closed_by_peer(s)
    s.close()
    assert not hub.service.events(0, 0, device_id="d1")[0]
    s = raw_device(hub, "d1", key)
    s.sendall(publish_packet("devices/d1/messages/events/", b"kept", qos=1))
    assert read_packet(s)[0] == 4
    s.close()
