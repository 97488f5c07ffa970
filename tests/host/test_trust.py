"""The roots a device trusts (host_tools/fleet/trust.py): Azure's three, fingerprint-checked."""
import hashlib
import os

import pytest
from cryptography import x509

from host_tools.errors import CliError
from host_tools.fleet import trust
from host_tools.files import write_atomic

# Published SHA-256 fingerprints (DigiCert and Microsoft PKI repositories), written out again here
# on purpose: a changed constant in trust.py must not silently change what devices trust.
EXPECTED = {
    "CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US":
        "CB:3C:CB:B7:60:31:E5:E0:13:8F:8D:D3:9A:23:F9:DE:47:FF:C3:5E:43:C1:14:4C:EA:27:D4:6A:5A:B1:CB:5F",
    "CN=Microsoft RSA Root Certificate Authority 2017,O=Microsoft Corporation,C=US":
        "C7:41:F7:0F:4B:2A:8D:88:BF:2E:71:C1:41:22:EF:53:EF:10:EB:A0:CF:A5:E6:4C:FA:20:F4:18:85:30:73:E0",
    "CN=DigiCert Global Root G3,OU=www.digicert.com,O=DigiCert Inc,C=US":
        "31:AD:66:48:F8:10:41:38:C7:38:F3:9E:A4:32:01:33:39:3E:3A:18:CC:02:29:6E:F9:7C:2A:C9:EF:67:31:D0",
}


def _fp(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


@pytest.mark.parametrize("system_dirs", [trust.SYSTEM_CERT_DIRS, ()], ids=["system store", "shipped copies"])
def test_the_three_azure_roots_have_their_published_fingerprints(system_dirs):
    roots = trust.azure_roots(system_dirs)
    got = {x509.load_der_x509_certificate(d).subject.rfc4514_string(): _fp(d) for d in roots}
    assert got == EXPECTED


def test_shipped_copies_match_the_fingerprints():
    for name, fp in trust.AZURE_ROOTS:
        with open(os.path.join(trust.SHIPPED, name + ".pem"), "rb") as f:
            assert trust.sha256(trust.der_certificates(f.read(), name)[0]) == fp


def test_a_tampered_root_is_refused(tmp_path):
    # a "root" with the right name but another certificate is not used; with no good copy
    # anywhere it is a clear error
    other = tmp_path / "store"
    other.mkdir()
    with open(os.path.join(trust.SHIPPED, "DigiCert_Global_Root_G3.pem"), "rb") as f:
        (other / "DigiCert_Global_Root_G2.pem").write_bytes(f.read())
    assert trust.azure_roots((str(other),)) == trust.azure_roots(())   # falls back to the shipped copy
    orig = trust.SHIPPED
    trust.SHIPPED = str(other)
    try:
        with pytest.raises(CliError, match="DigiCert_Global_Root_G2 with SHA-256 cb3ccbb7"):
            trust.azure_roots((str(other),))
    finally:
        trust.SHIPPED = orig


def test_bundle_version_goes_up_only_when_its_certificates_change(tmp_path):
    roots = trust.azure_roots(())
    d = str(tmp_path)
    assert trust.write_bundle(d, roots, write_atomic) == 1
    assert trust.write_bundle(d, roots, write_atomic) == 1
    assert trust.write_bundle(d, roots[:2], write_atomic) == 2
    assert (tmp_path / "ca.der").read_bytes() == b"".join(roots[:2])
