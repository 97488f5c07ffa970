"""The identity side: client credentials and the signed access tokens the commerce API requires.

- A client is an id and a random secret; only a salted SHA-256 of the secret is stored (the
  secret is 256 random bits, so a slow hash would buy nothing).
- Access tokens are JWTs signed ES256 with the service's P-256 key (DATA/signing.key, 0600),
  `kid` = the key's RFC 7638 thumbprint, published at the JWKS endpoint. Claims: iss, aud,
  sub = client_id, client_id, scope, iat, nbf, exp, jti.
- Verification takes the time from the injected clock (not PyJWT's), so tests move time.
"""
import base64
import hashlib
import hmac
import json
import os
import secrets
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.files import write_atomic

ALGORITHM = "ES256"
AUDIENCE = "commerce-api"
SCOPE = "commerce.orders"
KEY_FILE = "signing.key"
DEFAULT_LIFETIME = 3600  # seconds, as identity servers issue by default


class InvalidToken(Exception):
    """The bearer token is missing, forged, expired or not for this API; the message says which."""


def new_secret():
    return secrets.token_urlsafe(32)


def hash_secret(secret, salt=None):
    """(salt hex, digest hex) for a client secret."""
    salt = bytes.fromhex(salt) if salt else os.urandom(16)
    return salt.hex(), hashlib.sha256(salt + secret.encode()).hexdigest()


def secret_matches(secret, salt, digest):
    return hmac.compare_digest(hash_secret(secret, salt)[1], digest)


def load_or_create_key(data_dir):
    path = os.path.join(data_dir, KEY_FILE)
    if not os.path.exists(path):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        write_atomic(path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key):
    numbers = public_key.public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
           "y": _b64(numbers.y.to_bytes(32, "big"))}
    thumb = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()  # RFC 7638 order
    return dict(jwk, kid=_b64(hashlib.sha256(thumb).digest()), use="sig", alg=ALGORITHM)


class Issuer:
    def __init__(self, private_key, issuer, lifetime=DEFAULT_LIFETIME):
        self.key = private_key
        self.issuer = issuer
        self.lifetime = lifetime
        self.jwk = public_jwk(private_key.public_key())
        self.kid = self.jwk["kid"]

    def jwks(self):
        return {"keys": [self.jwk]}

    def issue(self, client_id, now):
        """The token response body (RFC 6749 section 5.1) for an authenticated client."""
        now = int(now)
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": client_id, "client_id": client_id,
                  "scope": SCOPE, "iat": now, "nbf": now, "exp": now + int(self.lifetime),
                  "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime),
                "scope": SCOPE}

    def verify(self, token, now, leeway=0):
        """The claims of a valid token, else InvalidToken."""
        if not token:
            raise InvalidToken("missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("kid") != self.kid:
            raise InvalidToken("token not signed by this identity server (unknown key id)")
        try:
            claims = jwt.decode(token, self.key.public_key(), algorithms=[ALGORITHM],
                                audience=AUDIENCE, issuer=self.issuer,
                                options={"verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False,
                                         "require": ["exp", "iat", "nbf", "sub", "scope"]})
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        if not isinstance(claims["exp"], int) or claims["exp"] + leeway <= now:
            raise InvalidToken("token expired")
        if not isinstance(claims["nbf"], int) or claims["nbf"] - leeway > now:
            raise InvalidToken("token not yet valid")
        if SCOPE not in str(claims["scope"]).split():
            raise InvalidToken(f"token lacks scope {SCOPE}")
        return claims
