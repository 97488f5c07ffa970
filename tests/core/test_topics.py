# Topic strings: golden tables, parsers on nasty and foreign input.
# Runs under pytest and under the unix MicroPython (tests/mp_runner.py).
# The tables are also checked against the official Azure SDK in tests/host/test_golden_sdk.py.
from firmware.iothub import dps, topics
from tests.core.check import raises

# (device id, [(key, value), ...], topic) -- equal to what azure-iot-device 2.14.0 publishes
TELEMETRY = [
    ("d1", [], "devices/d1/messages/events/"),
    ("d1", [("$.mid", "msg-1"), ("$.ct", "application/json"), ("$.ce", "utf-8"), ("kind", "order")],
     "devices/d1/messages/events/%24.mid=msg-1&%24.ct=application%2Fjson&%24.ce=utf-8&kind=order"),
    ("d1", [("$.mid", "a b+c"), ("$.cid", "x/y"), ("k&=", "v&=%"), ("\u00fc", "\u20ac")],
     "devices/d1/messages/events/%24.mid=a%20b%2Bc&%24.cid=x%2Fy&k%26%3D=v%26%3D%25&%C3%BC=%E2%82%AC"),
]

# (bag text, decoded) -- what the SDK extracts from a C2D topic, '$.to' included here
BAGS = [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a", {"a": None}),
    ("a=", {"a": ""}),
    ("a=1&b&c=", {"a": "1", "b": None, "c": ""}),
    ("%24.mid=m1&%24.to=%2Fdevices%2Fd1%2Fmessages%2FdeviceBound&%24.ct=application%2Fjson",
     {"$.mid": "m1", "$.to": "/devices/d1/messages/deviceBound", "$.ct": "application/json"}),
    ("iothub-ack=full&p=a%2Bb%20c", {"iothub-ack": "full", "p": "a+b c"}),
    ("k=a+b", {"k": "a+b"}),  # '+' is not a space in a topic
    ("%C3%BC=%E2%82%AC", {"\u00fc": "\u20ac"}),
    ("a=1&&b=2&", {"a": "1", "b": "2"}),
    ("k=v=w", {"k": "v=w"}),
]

FOREIGN = [
    "", "/", "#", "devices", "devices/d1", "devices/d2/messages/devicebound/a=1",
    "devices/d1/messages/events/a=1", "devices/d1/messages/deviceboundX",
    "$iothub/twin/re", "$iothub/methods/res/200/?$rid=1", "$iothub/twin/GET/?$rid=1",
    "$iothub/twin/PATCH/properties/reported/?$rid=1", "$dps/registrations/PUT/iotdps-register/?$rid=1",
    "\u00fc\u20ac", "devices/d1/messages/devicebound" + "x" * 3000, "+/+/#",
]


def test_username():
    assert topics.username("myhub.azure-devices.net", "d1") == \
        "myhub.azure-devices.net/d1/?api-version=2021-04-12"
    assert topics.username("h", "d1", model_id="dtmi:com:example:Thermostat;1") == \
        "h/d1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"


def test_telemetry_golden():
    for device_id, props, topic in TELEMETRY:
        assert topics.telemetry(device_id, props) == topic


def test_telemetry_never_contains_plus_or_space():
    t = topics.telemetry("d1", {"k y": "a+b c", "$.mid": "+ +"})
    assert "+" not in t and " " not in t


def test_telemetry_accepts_a_dict_and_bare_keys():
    assert topics.telemetry("d1", {"a": "1"}) == "devices/d1/messages/events/a=1"
    assert topics.telemetry("d1", [("flag", None)]) == "devices/d1/messages/events/flag"
    assert topics.telemetry("d1", [("n", 5)]) == "devices/d1/messages/events/n=5"


def test_bag_round_trip_and_decoding():
    for text, decoded in BAGS:
        assert topics.decode_bag(text) == decoded
    for _, decoded in BAGS:
        assert topics.decode_bag(topics.encode_bag(decoded)) == decoded


def test_bag_with_bad_escape_is_a_topic_error():
    for text in ("a=%zz", "%", "a=%C3", "%2=1"):
        raises(topics.TopicError, topics.decode_bag, text)


def test_very_long_bag():
    props = [("k%d" % i, "v&%d" % i) for i in range(300)]
    bag = topics.decode_bag(topics.encode_bag(props))
    assert len(bag) == 300 and bag["k299"] == "v&299"


def test_filters():
    assert topics.c2d_filter("d1") == "devices/d1/messages/devicebound/#"
    assert topics.TWIN_RES_FILTER == "$iothub/twin/res/#"
    assert topics.TWIN_DESIRED_FILTER == "$iothub/twin/PATCH/properties/desired/#"
    assert topics.METHODS_FILTER == "$iothub/methods/POST/#"
    assert dps.DPS_RES_FILTER == "$dps/registrations/res/#"


def test_parse_c2d():
    for text, decoded in BAGS:
        assert topics.parse_c2d("devices/d1/messages/devicebound/" + text, "d1") == decoded
    assert topics.parse_c2d("devices/d1/messages/devicebound", "d1") == {}
    raises(topics.TopicError, topics.parse_c2d, "devices/d1/messages/devicebound/a=%zz", "d1")


def test_parsers_answer_none_for_foreign_topics():
    for t in FOREIGN:
        assert topics.parse_c2d(t, "d1") is None
        assert topics.parse_twin_response(t) is None
        assert topics.parse_desired_patch(t) is None
        assert topics.parse_method_request(t) is None
        assert dps.parse_dps_response(t) is None


def test_builders_golden():
    assert topics.twin_get("1") == "$iothub/twin/GET/?$rid=1"
    assert topics.twin_patch_reported("r 2") == "$iothub/twin/PATCH/properties/reported/?$rid=r%202"
    assert topics.method_response("ab", 200) == "$iothub/methods/res/200/?$rid=ab"
    assert topics.method_response("a&b", "404") == "$iothub/methods/res/404/?$rid=a%26b"


def test_parse_twin_response():
    p = topics.parse_twin_response
    assert p("$iothub/twin/res/200/?$rid=1") == (200, "1", None)
    assert p("$iothub/twin/res/204/?$rid=7&$version=12") == (204, "7", 12)
    assert p("$iothub/twin/res/204/?%24rid=7&%24version=12") == (204, "7", 12)
    assert p("$iothub/twin/res/429/?$rid=a%26b") == (429, "a&b", None)
    for bad in ("$iothub/twin/res/", "$iothub/twin/res/200", "$iothub/twin/res/abc/?$rid=1",
                "$iothub/twin/res/200/?$version=1", "$iothub/twin/res/200/?$rid=1&$version=x",
                "$iothub/twin/res/200/?$rid=", "$iothub/twin/res/200/?$rid=%zz"):
        raises(topics.TopicError, p, bad)


def test_parse_desired_patch():
    p = topics.parse_desired_patch
    assert p("$iothub/twin/PATCH/properties/desired/?$version=4") == 4
    assert p("$iothub/twin/PATCH/properties/desired/?%24version=4&x") == 4
    for bad in ("$iothub/twin/PATCH/properties/desired/", "$iothub/twin/PATCH/properties/desired/?",
                "$iothub/twin/PATCH/properties/desired/?$version=", "$iothub/twin/PATCH/properties/desired/x"):
        raises(topics.TopicError, p, bad)


def test_parse_method_request():
    p = topics.parse_method_request
    assert p("$iothub/methods/POST/identify/?$rid=1") == ("identify", "1")
    assert p("$iothub/methods/POST/a%2Fb%20c/?$rid=ff") == ("a/b c", "ff")
    assert p("$iothub/methods/POST/\u00fc/?$rid=2") == ("\u00fc", "2")
    for bad in ("$iothub/methods/POST/", "$iothub/methods/POST/x", "$iothub/methods/POST//?$rid=1",
                "$iothub/methods/POST/x/?", "$iothub/methods/POST/%zz/?$rid=1"):
        raises(topics.TopicError, p, bad)


def test_dps_topics():
    assert dps.dps_username("0ne00000A0A", "reg-1") == "0ne00000A0A/registrations/reg-1/api-version=2019-03-31"
    assert dps.dps_resource("0ne00000A0A", "reg-1") == "0ne00000A0A/registrations/reg-1"
    assert dps.dps_register("1") == "$dps/registrations/PUT/iotdps-register/?$rid=1"
    assert dps.dps_status("2", "4.abc/def") == \
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc%2Fdef"
    p = dps.parse_dps_response
    assert p("$dps/registrations/res/202/?$rid=1&retry-after=3") == (202, "1", 3)
    assert p("$dps/registrations/res/200/?$rid=2") == (200, "2", None)
    for bad in ("$dps/registrations/res/x/?$rid=1", "$dps/registrations/res/202/?retry-after=3",
                "$dps/registrations/res/202/?$rid=1&retry-after=soon"):
        raises(topics.TopicError, p, bad)


def _pieces():
    return ["devices/", "d1", "/messages/", "devicebound", "/", "?", "$rid=", "$version=", "&", "=",
            "%", "%2", "%24", "%zz", "+", "#", "\u00fc", "$iothub/", "twin/res/", "200",
            "methods/POST/", "twin/PATCH/properties/desired/", "$dps/registrations/res/", "x", ""]


def test_parsers_never_raise_anything_but_topic_error():
    # A deterministic stream of topics glued from protocol fragments (an LCG, so both
    # interpreters see the same 3000 cases): each parser answers a value, None or TopicError.
    pieces = _pieces()
    seed = 12345
    for _ in range(3000):
        parts = []
        for _ in range(1 + seed % 9):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            parts.append(pieces[seed % len(pieces)])
        t = "".join(parts)
        for parse in (lambda s: topics.parse_c2d(s, "d1"), topics.parse_twin_response,
                      topics.parse_desired_patch, topics.parse_method_request,
                      dps.parse_dps_response):
            try:
                parse(t)
            except topics.TopicError:
                pass
