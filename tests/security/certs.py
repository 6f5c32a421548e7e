"""Throwaway PKI for the security tests: a CA, a broker certificate and client certificates (PEM files).

Test-only code (`cryptography` is a dev dependency). Everything is generated fresh per test session in a
temporary directory and valid for a day; EC P-256 keys, so generating it all takes milliseconds.

Files written to `directory`:
  ca.pem              the CA certificate: the brokers' truststore and the clients' ssl_cafile
  broker.pem          Kafka's PEM keystore: the broker's PKCS#8 private key, then its certificate and the CA
  client.pem/.key     a client certificate signed by the CA (CN=leadrelay-worker): mutual TLS
  rogue-ca.pem        a second, untrusted CA
  rogue-client.pem/.key  a client certificate signed by the rogue CA: must be refused
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BROKER_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certs:
    directory: Path
    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    client_subject: str  # the principal Kafka derives from the client certificate (User:<this>)
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


@dataclass(frozen=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "leadrelay-test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(cn: str) -> _Issuer:
    key = _key()
    name = _name(cn)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _Issuer(name, key, cert)


def _leaf(
    issuer: _Issuer, cn: str, *, server: bool, hosts: tuple[str, ...] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    builder = (
        _builder(_name(cn), issuer.name, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(issuer.key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: the only private-key format Kafka's PEM keystore reads.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _write(path: Path, data: bytes, *, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    return path


def generate(directory: Path, *, hosts: tuple[str, ...] = BROKER_HOSTS, client_cn: str = "leadrelay-worker") -> Certs:
    """Write a fresh CA, broker and client certificates (and an untrusted rogue pair) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("leadrelay-test-ca")
    broker_key, broker_cert = _leaf(ca, "kafka-broker", server=True, hosts=hosts)
    client_key, client_cert = _leaf(ca, client_cn, server=False)
    rogue = _ca("rogue-ca")
    rogue_key, rogue_cert = _leaf(rogue, client_cn, server=False)
    return Certs(
        directory=directory,
        ca=_write(directory / "ca.pem", _pem(ca.cert)),
        broker_keystore=_write(
            directory / "broker.pem", _pem_key(broker_key) + _pem(broker_cert, ca.cert), secret=True
        ),
        client_cert=_write(directory / "client.pem", _pem(client_cert)),
        client_key=_write(directory / "client.key", _pem_key(client_key), secret=True),
        client_subject=f"CN={client_cn},O=leadrelay-test",
        rogue_ca=_write(directory / "rogue-ca.pem", _pem(rogue.cert)),
        rogue_client_cert=_write(directory / "rogue-client.pem", _pem(rogue_cert)),
        rogue_client_key=_write(directory / "rogue-client.key", _pem_key(rogue_key), secret=True),
    )
