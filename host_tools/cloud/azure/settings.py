"""Where the order service's hub is: two connection strings, as the Azure portal shows them.

    {"service": "HostName=...;SharedAccessKeyName=service;SharedAccessKey=...",
     "eventHub": "Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=...",
     "consumerGroup": "$Default",                 optional
     "caFile": "...", "eventHubEndpoint": "sb://host:port", "amqpPort": N}   only for a local hub

from a 0600 JSON file (or stdin), or from a local hub's data folder (`--hub-data`), which
prints the same with `python -m host_tools hub connection-strings`.
"""
import json
import os
import stat
import sys
from dataclasses import dataclass
from typing import Optional


class SettingsError(Exception):
    pass


@dataclass
class HubSettings:
    service: str
    event_hub: str
    consumer_group: str = "$Default"
    ca_file: Optional[str] = None
    event_hub_endpoint: Optional[str] = None
    amqp_port: Optional[int] = None
    source: str = ""

    @classmethod
    def from_dict(cls, d, source):
        if not isinstance(d, dict):
            raise SettingsError(f"{source}: expected a JSON object with 'service' and 'eventHub'")
        for name, prefix in (("service", "HostName="), ("eventHub", "Endpoint=sb://")):
            v = d.get(name)
            if not isinstance(v, str) or not v.startswith(prefix):
                raise SettingsError(f"{source}: '{name}' must be a connection string starting {prefix}")
        s = cls(d["service"], d["eventHub"], d.get("consumerGroup") or "$Default", d.get("caFile"),
                d.get("eventHubEndpoint"), d.get("amqpPort"), source)
        s.parts("service")
        s.parts("eventHub")
        return s

    def parts(self, which):
        text = self.service if which == "service" else self.event_hub
        out = {}
        for part in text.strip().strip(";").split(";"):
            k, sep, v = part.partition("=")
            if not sep:
                raise SettingsError(f"{self.source}: the {which} connection string has a part without '='")
            out[k.strip()] = v.strip()
        need = (("HostName", "SharedAccessKeyName", "SharedAccessKey") if which == "service"
                else ("Endpoint", "SharedAccessKeyName", "SharedAccessKey", "EntityPath"))
        missing = [k for k in need if not out.get(k)]
        if missing:
            raise SettingsError(f"{self.source}: the {which} connection string has no {', '.join(missing)}")
        return out


def from_hub_data(data_dir):
    """The running local hub's connection strings (what `hub connection-strings` prints)."""
    from host_tools.cloud.hub.amqp import config
    try:
        with open(os.path.join(data_dir, "hub.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        raise SettingsError(f"no hub is running for {data_dir} (start it with `python -m host_tools hub "
                            f"--data {data_dir}`)") from None
    if not info.get("amqp_port"):
        raise SettingsError(f"the hub running for {data_dir} has no AMQP endpoint; restart it")
    _check_ca(os.path.join(data_dir, "certs", "ca.pem"))
    try:
        d = config.connection_strings(data_dir, info["host"], info["api_port"], info["amqp_port"])
    except (config.ConfigError, OSError, KeyError, ValueError) as exc:
        raise SettingsError(f"cannot read the hub's settings in {data_dir}: {exc}") from None
    return HubSettings.from_dict(d, f"hub data {data_dir}")


def _check_ca(path):
    import ssl
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise SettingsError(f"cannot use the hub's CA certificate {path} ({exc}); recreate it with "
                            f"`python -m host_tools certs --force` and restart the hub") from None


def from_file(path, stdin=None):
    """From a JSON file that only its owner can read, or '-' for standard input."""
    if path == "-":
        stream = stdin or sys.stdin
        if stream.isatty():
            raise SettingsError("--connection-file -: paste the JSON and end with Ctrl-D, or pipe it in")
        text, source = stream.read(), "standard input"
    else:
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise SettingsError(f"cannot read {path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SettingsError(f"{path} holds keys and others can read it (mode {stat.S_IMODE(st.st_mode):o}); "
                                f"chmod 600 {path}")
        source = path
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{source} is not valid JSON: {exc}") from None
    return HubSettings.from_dict(d, source)
