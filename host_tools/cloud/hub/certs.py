"""A local certificate authority and the hub's server certificate (localhost + 127.0.0.1), issued
the way Azure's are: root -> intermediate -> server, so TLS on the device verifies (and spends
time and memory on) a two-level chain as it will against IoT Hub and DPS.

Files in the output folder:
  ca.pem, ca.der       the root certificate (PEM for CPython, DER for MicroPython's mbedTLS):
                       the only one a device trusts
  ca.key               the root's private key (0600)
  intermediate.pem, intermediate.key   the issuing CA under the root (key 0600)
  server.pem           the hub's certificate followed by the intermediate (the chain it serves)
  server.der           the hub's certificate alone; server.key (0600)
Existing files are kept unless force=True, so devices provisioned with ca.der stay valid. A folder
from before the intermediate lacks intermediate.pem: ensure() says so, and --force makes a new
chain (devices provisioned with the old root must then be provisioned again).
Keys are RSA-2048, like the chain Azure IoT Hub serves (DigiCert Global Root G2), so a device
verifies the local hub the way it will verify Azure.
"""
import datetime
import ipaddress
import os

from host_tools.files import write_atomic

CA_NAME = "Order Buttons Local Hub CA"
INTERMEDIATE_NAME = "Order Buttons Local Hub Issuing CA"
_FILES = ("ca.pem", "ca.der", "ca.key", "intermediate.pem", "intermediate.key",
          "server.pem", "server.der", "server.key")
_DAYS_CA = 3650
_DAYS_SERVER = 825


def paths(out_dir):
    return {name: os.path.join(out_dir, name) for name in _FILES}


def _ca_cert(x509, hashes, name, key, issuer_name, issuer_key, now, days, path_length):
    b = (x509.CertificateBuilder()
         .subject_name(name).issuer_name(issuer_name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                      content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_key is not key:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class CertsError(Exception):
    """The certificate folder cannot be used or made; the message is one line saying why."""


def ensure(out_dir, force=False, hosts=("localhost",), ips=("127.0.0.1",)):
    """Create the CA chain and the server certificate unless they all exist. Returns (paths, created).

    Existing files are kept only when they are whole (each parses, each key matches its
    certificate, the DER copies equal the PEM ones); otherwise CertsError, and nothing is
    written unless force=True. The folder itself is created only when files are written."""
    p = paths(out_dir)
    present = [name for name in _FILES if os.path.lexists(p[name])]
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise CertsError("%s exists and is not a folder" % out_dir)
    if present and not force:
        missing = [name for name in _FILES if name not in present]
        if missing:
            raise CertsError("%s lacks %s; --force makes a new CA (devices provisioned with the "
                             "old one must be provisioned again)" % (out_dir, ", ".join(missing)))
        problem = check(p)
        if problem:
            raise CertsError("%s: %s; --force makes a new CA (devices provisioned with the old one "
                             "must be provisioned again)" % (out_dir, problem))
        return p, False

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise CertsError("cannot create %s: %s" % (out_dir, exc.strerror)) from None
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)

    def new_key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key = new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_cert = _ca_cert(x509, hashes, ca_name, ca_key, ca_name, ca_key, now, _DAYS_CA, 1)
    int_key = new_key()
    int_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, INTERMEDIATE_NAME)])
    int_cert = _ca_cert(x509, hashes, int_name, int_key, ca_name, ca_key, now, _DAYS_CA, 0)

    srv_key = new_key()
    sans = [x509.DNSName(h) for h in hosts] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(int_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=_DAYS_SERVER))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(int_key.public_key()),
                       critical=False)
        .sign(int_key, hashes.SHA256())
    )

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    # keys first: a certificate on disk without its key would be useless
    try:
        write_atomic(p["ca.key"], key_pem(ca_key), mode=0o600)
        write_atomic(p["intermediate.key"], key_pem(int_key), mode=0o600)
        write_atomic(p["server.key"], key_pem(srv_key), mode=0o600)
        write_atomic(p["ca.pem"], ca_cert.public_bytes(pem))
        write_atomic(p["ca.der"], ca_cert.public_bytes(der))
        write_atomic(p["intermediate.pem"], int_cert.public_bytes(pem))
        write_atomic(p["server.pem"], srv_cert.public_bytes(pem) + int_cert.public_bytes(pem))
        write_atomic(p["server.der"], srv_cert.public_bytes(der))
    except OSError as exc:
        raise CertsError("cannot write certificates to %s: %s" % (out_dir, exc.strerror)) from None
    return p, True


def check(p):
    """None when the files in paths `p` form a whole CA + server set, else what is wrong."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    def read(name):
        with open(p[name], "rb") as f:
            return f.read()

    try:
        certs = {}
        for name in ("ca", "intermediate", "server"):
            try:
                # server.pem holds the chain it serves: its own certificate first
                cert = x509.load_pem_x509_certificates(read(name + ".pem"))[0]
            except (ValueError, IndexError):
                return "%s.pem is not a PEM certificate (truncated?)" % name
            if name != "intermediate":
                try:
                    if x509.load_der_x509_certificate(read(name + ".der")) != cert:
                        return "%s.der is not the certificate in %s.pem" % (name, name)
                except ValueError:
                    return "%s.der is not a DER certificate (truncated?)" % name
            try:
                key = serialization.load_pem_private_key(read(name + ".key"), password=None)
            except (ValueError, TypeError):
                return "%s.key is not an unencrypted PEM private key (truncated?)" % name
            if key.public_key().public_numbers() != cert.public_key().public_numbers():
                return "%s.key does not belong to %s.pem" % (name, name)
            certs[name] = cert
        for child, parent in (("server", "intermediate"), ("intermediate", "ca")):
            try:
                certs[child].verify_directly_issued_by(certs[parent])
            except (ValueError, TypeError, InvalidSignature):
                return "%s.pem is not signed by %s.pem" % (child, parent)
    except OSError as exc:
        return "cannot read %s: %s" % (exc.filename, exc.strerror)
    return None
