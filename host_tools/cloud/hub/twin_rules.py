"""IoT Hub's documented device-twin limits ("Understand and use device twins in IoT Hub"):

- keys: UTF-8, case-sensitive, at most 1 KB, no control characters (C0, C1), no `.`, `$` or space;
- string values at most 4 KB;
- depth of JSON objects at most 10 (the section's root object counts as level 1);
- size: tags 8 KB, desired and reported 32 KB each, counted without the read-only `$version` /
  `$metadata` and without whitespace outside strings.

A patch that breaks them is refused whole with 400, over MQTT and over the service API.
"""
import json

MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4 * 1024
MAX_DEPTH = 10
MAX_SECTION_BYTES = {"tags": 8 * 1024, "desired": 32 * 1024, "reported": 32 * 1024}
READ_ONLY = ("$version", "$metadata")  # the service SDKs round-trip them in a twin; ignored


class TwinRuleError(ValueError):
    """A patch IoT Hub answers with 400."""


def _bad(message):
    return TwinRuleError(message)


def _check_key(key, path):
    if not key:
        raise _bad("twin key at %s is empty" % (path or "the root"))
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise _bad("twin key %r... is longer than 1 KB" % key[:32])
    for ch in key:
        o = ord(ch)
        if ch in ".$ " or o < 0x20 or 0x7F <= o <= 0x9F:
            raise _bad("twin key %r contains %r (no '.', '$', space or control characters)" % (key, ch))


def check_patch(section, patch):
    """Raise TwinRuleError unless `patch` (already without READ_ONLY keys at its root) obeys
    IoT Hub's key, value and depth rules. Iterative: a deep document cannot exhaust the stack."""
    if not isinstance(patch, dict):
        raise _bad("a twin patch must be a JSON object")
    stack = [(patch, 1, section)]
    while stack:
        obj, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise _bad("twin %s is nested deeper than %d levels (at %s)" % (section, MAX_DEPTH, path))
        for key, value in obj.items():
            _check_key(key, path)
            where = path + "." + key
            if isinstance(value, dict):
                stack.append((value, depth + 1, where))
            elif isinstance(value, list):
                _check_list(value, depth + 1, where, stack)
            elif isinstance(value, str) and len(value.encode("utf-8")) > MAX_STRING_BYTES:
                raise _bad("twin value at %s is a string longer than 4 KB" % where)


def _check_list(items, depth, where, stack):
    if depth > MAX_DEPTH:
        raise _bad("twin value at %s is nested deeper than %d levels" % (where, MAX_DEPTH))
    for i, item in enumerate(items):
        if isinstance(item, dict):
            stack.append((item, depth + 1, "%s[%d]" % (where, i)))
        elif isinstance(item, list):
            _check_list(item, depth + 1, "%s[%d]" % (where, i), stack)
        elif isinstance(item, str) and len(item.encode("utf-8")) > MAX_STRING_BYTES:
            raise _bad("twin value at %s[%d] is a string longer than 4 KB" % (where, i))


def strip_read_only(patch):
    return {k: v for k, v in patch.items() if k not in READ_ONLY}


def check_size(section, doc):
    size = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    limit = MAX_SECTION_BYTES[section]
    if size > limit:
        raise _bad("twin %s would be %d bytes, over IoT Hub's %d KB" % (section, size, limit // 1024))
