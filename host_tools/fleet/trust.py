"""The roots a device trusts, as one versioned CA bundle in its folder.

For Azure that is the three roots Microsoft asks IoT devices to trust so that an emergency root
change does not strand them: DigiCert Global Root G2 (today's IoT Hub and DPS chains), Microsoft
RSA Root CA 2017 (the planned alternative) and DigiCert Global Root G3 (ECC hubs). Each comes from
the system certificate store where it is there, else from the copy in host_tools/fleet/roots/
(public certificates), and either way must have the SHA-256 fingerprint written below.

The device folder gets
  ca.der    the bundle: DER certificates back to back (firmware/runtime/storage.load_ca splits it
            and gives each to the TLS layer; see firmware/runtime/README.md for why not one cadata)
  ca.json   {"version": N, "certs": [{"subject": ..., "sha256": ...}]}: N goes up whenever the
            bundle's content changes, so a later OTA can replace the bundle on its own
"""
import hashlib
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from host_tools.errors import CliError

SYSTEM_CERT_DIRS = ("/etc/ssl/certs", "/usr/share/ca-certificates/mozilla", "/etc/pki/tls/certs")
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "roots")
BUNDLE = "ca.der"
MANIFEST = "ca.json"

# (file name in the system store and in roots/, SHA-256 of the DER certificate)
AZURE_ROOTS = (
    ("DigiCert_Global_Root_G2",
     "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f"),
    ("Microsoft_RSA_Root_Certificate_Authority_2017",
     "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0"),
    ("DigiCert_Global_Root_G3",
     "31ad6648f8104138c738f39ea4320133393e3a18cc02296ef97c2ac9ef6731d0"),
)


def der_certificates(data, what):
    """PEM (one or more certificates) or DER bytes -> list of DER certificates; CliError if none."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs, rest = [], data
            while rest:
                n = _der_length(rest)
                certs.append(x509.load_der_x509_certificate(rest[:n]))
                rest = rest[n:]
    except ValueError:
        raise CliError(f"{what} is not a PEM or DER certificate (truncated or another kind of file?)") from None
    if not certs:
        raise CliError(f"{what} holds no certificate")
    return [c.public_bytes(Encoding.DER) for c in certs]


def _der_length(data):
    # the length of the DER SEQUENCE at the start of data (tag, length, content)
    if len(data) < 2 or data[0] != 0x30:
        raise ValueError("not DER")
    n = data[1]
    if n < 0x80:
        return 2 + n
    k = n & 0x7F
    if k == 0 or k > 4 or len(data) < 2 + k:
        raise ValueError("bad DER length")
    return 2 + k + int.from_bytes(data[2:2 + k], "big")


def sha256(der):
    return hashlib.sha256(der).hexdigest()


def _root(name, fingerprint, system_dirs):
    candidates = [os.path.join(d, name + ext) for d in system_dirs for ext in (".pem", ".crt")]
    candidates.append(os.path.join(SHIPPED, name + ".pem"))
    for path in candidates:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        try:
            der = der_certificates(data, path)[0]
        except CliError:
            continue
        if sha256(der) == fingerprint:
            return der
    raise CliError(f"{name} with SHA-256 {fingerprint} was found neither in the system certificate "
                   f"store nor in {SHIPPED}")


def azure_roots(system_dirs=SYSTEM_CERT_DIRS):
    """The three Azure roots as DER, each checked against its fingerprint."""
    return [_root(name, fp, system_dirs) for name, fp in AZURE_ROOTS]


def bundle(folder, certs):
    """(ca.der bytes, ca.json text) for `certs`; the version goes up only when they change
    against the ca.json already in `folder`."""
    entries = [{"subject": x509.load_der_x509_certificate(c).subject.rfc4514_string(),
                "sha256": sha256(c)} for c in certs]
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            old = json.load(f)
        version = int(old["version"])
        if old.get("certs") != entries:
            version += 1
    except (OSError, ValueError, KeyError, TypeError):
        version = 1
    return b"".join(certs), json.dumps({"version": version, "certs": entries}, indent=1) + "\n"


def write_bundle(folder, certs, write_atomic):
    """Write ca.der and ca.json; returns the bundle's version."""
    data, manifest = bundle(folder, certs)
    write_atomic(os.path.join(folder, BUNDLE), data)
    write_atomic(os.path.join(folder, MANIFEST), manifest)
    return json.loads(manifest)["version"]
