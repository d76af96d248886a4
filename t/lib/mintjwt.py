#!/usr/bin/python3
"""Test-only JWT and JWKS maker for alyd's credential tests.

Signs by hand (python3-cryptography) rather than through a JWT library, so
the tests can also make the tokens a library refuses to make: alg "none",
HS256 keyed with an RSA public key's PEM text, a header naming one key and a
signature from another.

  mintjwt.py jwks KID=rsa.pem KID=ec.pem ...        JWKS of the public keys
  mintjwt.py token --alg RS256 --key rsa.pem [--kid K] [--claims JSON]
                   [--header JSON | --raw-header TEXT] [--secret-file F] [--no-sig]
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def load_private(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def jwks(args):
    keys = []
    for spec in args.keys:
        kid, path = spec.split("=", 1)
        pub = load_private(path).public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            keys.append({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": uint(nums.n), "e": uint(nums.e)})
        else:
            nums = pub.public_numbers()
            keys.append({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                         "x": uint(nums.x, 32), "y": uint(nums.y, 32)})
    json.dump({"keys": keys}, sys.stdout)


def token(args):
    header = {"alg": args.alg, "typ": "JWT"}
    if args.kid:
        header["kid"] = args.kid
    if args.header:
        header.update(json.loads(args.header))
    claims = json.loads(args.claims) if args.claims else {}
    header_text = args.raw_header if args.raw_header else json.dumps(header, separators=(",", ":"))
    signing_input = (b64u(header_text.encode()) + "." +
                     b64u(json.dumps(claims, separators=(",", ":")).encode())).encode()
    if args.no_sig or args.alg == "none":
        sig = b""
    elif args.alg == "HS256":
        with open(args.secret_file, "rb") as f:
            secret = f.read()
        sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    else:
        key = load_private(args.key)
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    sys.stdout.write(signing_input.decode() + "." + b64u(sig))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("jwks")
    j.add_argument("keys", nargs="+")
    t = sub.add_parser("token")
    t.add_argument("--alg", required=True)
    t.add_argument("--key")
    t.add_argument("--kid")
    t.add_argument("--claims")
    t.add_argument("--header")
    t.add_argument("--raw-header", help="the header's exact JSON text (duplicate members and all)")
    t.add_argument("--secret-file")
    t.add_argument("--no-sig", action="store_true")
    args = p.parse_args()
    jwks(args) if args.cmd == "jwks" else token(args)


if __name__ == "__main__":
    main()
