#!/usr/bin/env python3
"""Certificates for the test broker's TLS listeners (deploy/kafka/kafka.sh), made with `cryptography`.

    python3 deploy/kafka/tls.py DIR

Writes into DIR: ca.pem (a throwaway CA), server.pem (the broker's certificate for 127.0.0.1 and
localhost, its chain and its unencrypted PKCS#8 key, as Kafka's PEM keystore reads it), and
client.pem / client-key.pem (a client certificate of the same CA, for the listener that requires
one). Valid for 30 days; the broker's work directory is made anew at every start.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("crm-guard test CA", ca_key, "crm-guard test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", server_key, "crm-guard test CA", ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("crm-guard", client_key, "crm-guard test CA", ca_key)
    (target / "ca.pem").write_bytes(_pem(ca))
    (target / "server.pem").write_bytes(_key(server_key) + _pem(server) + _pem(ca))
    (target / "client.pem").write_bytes(_pem(client))
    (target / "client-key.pem").write_bytes(_key(client_key))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tls.py DIR")
    main(Path(sys.argv[1]))
