"""What a client needs to reach the local hub instead of Azure, and nothing more.

- trust: uamqp (under azure-iot-hub) takes its CA bundle from SSL_CERT_FILE, azure-eventhub from
  connection_verify=, msrest/requests from REQUESTS_CA_BUNDLE.
- ports: Azure listens on 5671 (AMQP) and 443 (HTTPS). azure-eventhub takes another AMQP port
  through its public custom_endpoint_address=; uamqp always dials 5671 (its JWTTokenAuth is built
  by azure-iot-hub without a port), so for a local hub on another port the default port of that
  class is changed, in this process only. With the hub on 5671 nothing is changed.
"""
import os

AMQPS_PORT = 5671
_patched = {}


def trust(ca_file):
    """Make uamqp and requests trust `ca_file` in this process (Azure's roots are then not
    trusted: only for a local hub)."""
    os.environ["SSL_CERT_FILE"] = ca_file
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file


def uamqp_port(port):
    """Make uamqp dial `port` instead of 5671 (no-op for 5671 or None)."""
    if port in (None, AMQPS_PORT) or _patched.get("port") == port:
        return
    import uamqp.authentication
    cls = uamqp.authentication.JWTTokenAuth
    original = _patched.setdefault("init", cls.__init__)

    def init(self, *args, **kwargs):
        kwargs.setdefault("port", _patched["port"])
        original(self, *args, **kwargs)

    _patched["port"] = port
    cls.__init__ = init
