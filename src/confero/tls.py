"""TLS for https/wss: the server's reloadable SSL context, and self-signed certificates for a LAN try.

`ServerTLS` owns one `ssl.SSLContext` for the server's whole life. `reload()` loads the files
again into that same context: handshakes from then on present the new certificate, while the
connections already open keep the session they negotiated (OpenSSL copies the certificate into
each connection at its start). A reload that fails (a missing file, a key that does not match)
changes nothing: the files are first loaded into a scratch context.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Days a certificate made by `confero cert` is valid (Apple's limit for TLS server certificates).
CERT_DAYS = 825


class ServerTLS:
    """The server side of TLS: a context made from a PEM certificate (or chain) and key."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_file, key_file)
        self.loads = 1
        self.failed_reloads = 0

    def reload(self) -> bool:
        """Load the files again (SIGHUP). False, logged, and the old certificate kept on failure."""
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            self.failed_reloads += 1
            logger.error(
                "TLS: reloading %s / %s failed, keeping the current certificate: %s", self.cert_file, self.key_file, exc
            )
            return False
        self.loads += 1
        logger.info("TLS: certificate reloaded from %s", self.cert_file)
        return True

    def close(self) -> None:
        """Nothing to release (the context goes with the object); here for the long-lived-object rule."""

    def dump(self) -> dict[str, Any]:
        return {"cert_file": self.cert_file, "loads": self.loads, "failed_reloads": self.failed_reloads}


def write_self_signed(hosts: Sequence[str], cert_file: Path, key_file: Path, days: int = CERT_DAYS) -> tuple[str, str]:
    """Write a self-signed certificate naming `hosts` (DNS names or IP addresses) and its key.

    Returns (SHA-256 fingerprint of the certificate, base64 SHA-256 of its public key: the value
    Chromium's --ignore-certificate-errors-spki-list takes). The key file is readable by its owner only.
    """
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("at least one host name or address")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Confero (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return fingerprint, base64.b64encode(hashlib.sha256(spki).digest()).decode()


def trust_instructions(
    cert_file: Path, key_file: Path, fingerprint: str, spki: str, hosts: Sequence[str], tls_port: int
) -> str:
    """What `confero cert` prints: how to serve with the files and how each client trusts them."""
    return f"""\
Wrote {cert_file} (SHA-256 {fingerprint}).

Serve with it:
  confero serve --tls-cert {cert_file} --tls-key {key_file}
  then open https://{hosts[0]}:{tls_port}/WebRTCAppEE/ (wss://{hosts[0]}:{tls_port}/WebRTCAppEE/websocket)

Trust it on each machine that connects (it is its own issuer):
  Debian/Ubuntu: sudo cp {cert_file} /usr/local/share/ca-certificates/confero.crt && sudo update-ca-certificates
  Fedora/RHEL:   sudo cp {cert_file} /etc/pki/ca-trust/source/anchors/confero.pem && sudo update-ca-trust
  macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert_file}
  Windows:       certutil -addstore -f Root {cert_file}
  Firefox:       Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import
  Android/iOS:   copy the file to the device and install it as a CA certificate (iOS: then enable it in
                 Settings > General > About > Certificate Trust Settings)
  Chromium, for a test only: --ignore-certificate-errors-spki-list={spki}
"""
