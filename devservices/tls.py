"""Certificates the project makes for itself: a CA and a broker certificate for 127.0.0.1/localhost (PEM).

The brokers read them as PEM key stores (`ssl.keystore.type=PEM`), clients trust the CA through
KAFKA_SSL_CA_LOCATION. Nothing is downloaded; the files live under the cluster's var directory.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# The brokers' TLS identity; also their principal on the mutual-TLS controller listener (User:CN=broker).
BROKER_CN = "broker"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate (PEM): what clients trust
    keystore: Path  # the broker's private key and certificate chain (PEM): what brokers present

    @property
    def broker_principal(self) -> str:
        return f"User:CN={BROKER_CN}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "bank local CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


LOCAL_HOSTS = ("localhost", "127.0.0.1")


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    hosts: tuple[str, ...] = LOCAL_HOSTS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for `hosts` (names or IPs), usable as TLS server and client (the controller listener is mutual)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(names),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: what Kafka's PEM key store reads when no ssl.key.password is set.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure(directory: Path, hosts: tuple[str, ...] = LOCAL_HOSTS) -> TlsFiles:
    """Make the CA and the broker's key store (for `hosts`) once; later calls reuse them.

    Also `client-ssl.properties`: Kafka's own tools (kafka-configs.sh, healthchecks) connecting as
    the brokers' principal over mutual TLS, as docker-compose.yml does to create the SCRAM users.
    """
    files = TlsFiles(directory / "ca.pem", directory / "broker.pem")
    if files.ca.exists() and files.keystore.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    key, cert = make_leaf(ca_key, ca_cert, BROKER_CN, hosts)
    files.keystore.write_bytes(pem_key(key) + pem_cert(cert) + pem_cert(ca_cert))
    files.keystore.chmod(0o600)
    files.ca.write_bytes(pem_cert(ca_cert))
    (directory / "client-ssl.properties").write_text(
        "security.protocol=SSL\n"
        f"ssl.keystore.type=PEM\nssl.keystore.location={files.keystore}\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={files.ca}\n"
    )
    return files
