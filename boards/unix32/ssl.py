# ssl for the 32-bit bench build, which has no micropython-lib: the part of the ssl API that the
# firmware and umqtt.simple call (SSLContext with keyword arguments, wrap_socket), over
# MicroPython's built-in tls module, which is what micropython-lib's ssl wraps on an ESP32 image.
import tls
from tls import (CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED,  # noqa: F401
                 PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER)


class SSLContext:
    def __init__(self, protocol=PROTOCOL_TLS_CLIENT):
        self._ctx = tls.SSLContext(protocol)

    @property
    def verify_mode(self):
        return self._ctx.verify_mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._ctx.verify_mode = mode

    def load_cert_chain(self, certfile, keyfile):
        self._ctx.load_cert_chain(certfile, keyfile)

    def load_verify_locations(self, cafile=None, cadata=None):
        if cafile:
            with open(cafile, "rb") as f:
                cadata = f.read()
        self._ctx.load_verify_locations(cadata)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        return self._ctx.wrap_socket(sock, server_side=server_side,
                                     do_handshake_on_connect=do_handshake_on_connect,
                                     server_hostname=server_hostname)


def wrap_socket(sock, server_side=False, key=None, cert=None, cert_reqs=CERT_NONE,
                cadata=None, server_hostname=None, do_handshake=True):
    ctx = tls.SSLContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
    if cert or key:
        ctx.load_cert_chain(cert, key)
    if cadata:
        ctx.load_verify_locations(cadata)
    ctx.verify_mode = cert_reqs
    return ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                           server_hostname=server_hostname)
