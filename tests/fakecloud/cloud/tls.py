"""TLS material: a throw-away CA, server certificates for 127.0.0.1 and
localhost (good, or bad on purpose for --tls-fault), and the server
SSLContexts made from them.
"""

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .wire import utcnow


TLS_FAULTS = ("unknown-ca", "wrong-host", "expired")


def make_ca(now, common_name):
    """A self-signed CA: (key, certificate)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256()))
    return ca_key, ca_cert


def make_server_cert(ca_key, ca_cert, now, fault=None):
    """A server certificate signed by the CA: for 127.0.0.1 and localhost,
    valid now, unless fault says otherwise.  Returns (key, certificate)."""
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.DNSName("localhost")]
    common_name = "127.0.0.1"
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)
    if fault == "wrong-host":
        names = [x509.DNSName("wrong-host.invalid")]
        common_name = "wrong-host.invalid"
    elif fault == "expired":
        not_before = now - datetime.timedelta(days=30)
        not_after = now - datetime.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256()))
    return key, cert


def server_context(directory, stem, key, cert):
    """Write DIR/STEM.pem and DIR/STEM.key; the server SSLContext."""
    pem = serialization.Encoding.PEM
    cert_file = os.path.join(directory, stem + ".pem")
    key_file = os.path.join(directory, stem + ".key")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(pem))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def make_tls(directory, fault=None):
    """A throw-away CA (DIR/ca.pem) and a server certificate for 127.0.0.1
    and localhost signed by it; returns the server's SSLContext.  With a
    fault (one of TLS_FAULTS) it returns (good context, bad context): the
    bad one serves a certificate that a client trusting only ca.pem must
    refuse."""
    now = utcnow()
    ca_key, ca_cert = make_ca(now, "fakecloud test CA")
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    good = server_context(directory, "server",
                          *make_server_cert(ca_key, ca_cert, now))
    if fault is None:
        return good
    if fault not in TLS_FAULTS:
        raise ValueError(f"unknown TLS fault {fault!r}")
    if fault == "unknown-ca":
        ca_key, ca_cert = make_ca(now, "fakecloud rogue CA")
    bad = server_context(directory, "server-" + fault,
                         *make_server_cert(ca_key, ca_cert, now, fault))
    return good, bad
