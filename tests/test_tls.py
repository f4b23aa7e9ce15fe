"""The agent gateway's TLS (provisiond.tls): real keys, real certificates, real handshakes."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import multiprocessing
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisiond import tls
from provisiond.config import Settings, load_settings
from provisiond.errors import ConfigError

FILES = ("ca.pem", "ca.key", "server.pem", "server.key")


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(environ={"HOME": str(tmp_path)}, overrides={"data_dir": str(tmp_path / "data"), **overrides})


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san(cert: x509.Certificate) -> tuple[set[str], set[Any]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {name.lower() for name in names.get_values_for_type(x509.DNSName)}, set(
        names.get_values_for_type(x509.IPAddress))


def der_sha256(path: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {name: ((directory / name).stat().st_ino, (directory / name).stat().st_mtime_ns,
                   (directory / name).read_bytes()) for name in FILES}


# --------------------------------------------------------------------------- provisiond's own CA


def test_first_call_makes_a_ca_and_a_server_certificate_for_every_name(tmp_path, caplog):
    settings = settings_for(tmp_path, agent_server_names=["gw.example.com", "10.9.8.7", "2001:db8::5"],
                            netboot_address="10.0.0.1", agent_public_url="https://agents.example.net:8443")
    with caplog.at_level(logging.INFO, logger="provisiond.tls"):
        files = tls.ensure(settings)

    directory = tmp_path / "data" / "tls"
    assert files == tls.TlsFiles(ca_cert=directory / "ca.pem", cert=directory / "server.pem",
                                 key=directory / "server.key", ca_fingerprint=files.ca_fingerprint)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (directory / "server.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "ca.key", "ca.pem", "server.key", "server.pem"]

    assert files.ca_fingerprint == der_sha256(files.ca_cert) == tls.fingerprint(files.ca_cert)
    assert files.ca_fingerprint == files.ca_fingerprint.lower() and len(files.ca_fingerprint) == 64

    ca = load_cert(files.ca_cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("provisiond CA ")
    assert ca.subject == ca.issuer
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert timedelta(days=3650) <= ca.not_valid_after_utc - ca.not_valid_before_utc <= timedelta(days=3653)
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert ca_key.public_key() == ca.public_key()

    server = load_cert(files.cert)
    server.verify_directly_issued_by(ca)
    assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == socket.getfqdn()[:64]
    assert server.public_key().curve.name == "secp256r1"
    assert server.not_valid_after_utc - server.not_valid_before_utc == timedelta(days=825)
    assert server.not_valid_before_utc <= datetime.now(timezone.utc)
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    dns, ips = san(server)
    assert dns == {socket.getfqdn().lower(), socket.gethostname().lower(), "localhost", "gw.example.com",
                   "agents.example.net"}
    assert ips == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.9.8.7", "2001:db8::5", "10.0.0.1")}
    server_key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert server_key.public_key() == server.public_key()

    logged = "\n".join(record.getMessage() for record in caplog.records if record.levelno == logging.INFO)
    assert str(files.ca_cert) in logged and str(files.cert) in logged and files.ca_fingerprint in logged
    assert "PRIVATE KEY" not in logged and "BEGIN" not in logged


def test_a_second_call_reuses_the_files_untouched(tmp_path, caplog):
    settings = settings_for(tmp_path, agent_server_names=["gw.example.com"])
    first = tls.ensure(settings)
    before = snapshot(first.ca_cert.parent)
    caplog.clear()  # the first call's records, when an earlier test left provisiond logging at INFO
    with caplog.at_level(logging.INFO, logger="provisiond.tls"):
        second = tls.ensure(settings_for(tmp_path, agent_server_names=["gw.example.com"]))
    assert second == first
    assert snapshot(first.ca_cert.parent) == before
    assert not caplog.records


def test_a_new_server_name_reissues_the_certificate_from_the_same_ca(tmp_path, caplog):
    first = tls.ensure(settings_for(tmp_path, agent_server_names=["gw.example.com"]))
    before = snapshot(first.ca_cert.parent)
    caplog.clear()  # as above: only the second call's records count
    with caplog.at_level(logging.INFO, logger="provisiond.tls"):
        second = tls.ensure(settings_for(tmp_path, agent_server_names=["gw.example.com", "gw2.example.com",
                                                                       "192.0.2.7"]))
    after = snapshot(first.ca_cert.parent)
    assert second.ca_fingerprint == first.ca_fingerprint
    assert after["ca.pem"] == before["ca.pem"] and after["ca.key"] == before["ca.key"]
    assert after["server.pem"][2] != before["server.pem"][2] and after["server.key"][2] != before["server.key"][2]
    server = load_cert(second.cert)
    server.verify_directly_issued_by(load_cert(second.ca_cert))
    dns, ips = san(server)
    assert {"gw.example.com", "gw2.example.com"} <= dns and ipaddress.ip_address("192.0.2.7") in ips
    assert [r.getMessage() for r in caplog.records if "gw2.example.com" in r.getMessage() and "did not name" in
            r.getMessage()], "the re-issue is logged with its reason"
    assert not [r for r in caplog.records if "made provisiond's CA" in r.getMessage()]


def test_a_name_dropped_from_the_settings_does_not_reissue(tmp_path):
    """Roles with different names must not take turns re-issuing the certificate."""
    first = tls.ensure(settings_for(tmp_path, agent_server_names=["gw.example.com"]))
    before = snapshot(first.ca_cert.parent)
    tls.ensure(settings_for(tmp_path))
    assert snapshot(first.ca_cert.parent) == before


def test_a_certificate_expiring_within_30_days_is_reissued_from_the_same_ca(tmp_path):
    settings = settings_for(tmp_path)
    files = tls.ensure(settings)
    directory = files.ca_cert.parent
    ca = load_cert(files.ca_cert)
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    old = load_cert(files.cert)
    server_key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    now = datetime.now(timezone.utc)
    soon = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
            .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=800)).not_valid_after(now + timedelta(days=10))
            .add_extension(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
            .sign(ca_key, hashes.SHA256()))
    files.cert.write_bytes(soon.public_bytes(serialization.Encoding.PEM))

    again = tls.ensure(settings)
    renewed = load_cert(again.cert)
    assert again.ca_fingerprint == files.ca_fingerprint
    assert renewed.not_valid_after_utc - now > timedelta(days=800)
    renewed.verify_directly_issued_by(ca)


def test_a_damaged_server_certificate_is_reissued(tmp_path):
    files = tls.ensure(settings_for(tmp_path))
    files.cert.write_bytes(files.cert.read_bytes()[:100])
    again = tls.ensure(settings_for(tmp_path))
    assert again.ca_fingerprint == files.ca_fingerprint
    load_cert(again.cert).verify_directly_issued_by(load_cert(again.ca_cert))


def test_without_the_ca_key_the_certificate_is_kept_but_never_signed_by_a_new_ca(tmp_path):
    files = tls.ensure(settings_for(tmp_path))
    (files.ca_cert.parent / "ca.key").unlink()
    ca_before = files.ca_cert.read_bytes()
    assert tls.ensure(settings_for(tmp_path)) == files  # nothing to sign: still served

    with pytest.raises(ConfigError) as caught:
        tls.ensure(settings_for(tmp_path, agent_server_names=["new.example.com"]))
    message = str(caught.value)
    assert "ca.key" in message and "backup" in message and "new CA" in message
    assert files.ca_cert.read_bytes() == ca_before


def test_a_damaged_ca_certificate_is_an_error_not_a_new_ca(tmp_path):
    files = tls.ensure(settings_for(tmp_path))
    files.ca_cert.write_text("garbage\n")
    with pytest.raises(ConfigError, match="damaged.*restore it from a backup"):
        tls.ensure(settings_for(tmp_path))
    assert files.ca_cert.read_text() == "garbage\n"


def test_a_bad_server_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="agent_server_names: 'not a name' is neither a DNS name nor an IP"):
        tls.ensure(settings_for(tmp_path, agent_server_names=["not a name"]))


def _ensure_in_child(data_dir: str, barrier: Any, results: Any) -> None:
    settings = load_settings(environ={"HOME": data_dir}, overrides={"data_dir": data_dir})
    barrier.wait(timeout=60)
    try:
        results.put(tls.ensure(settings).ca_fingerprint)
    except Exception as exc:  # reported to the test, which fails at once instead of waiting
        results.put(f"error: {exc!r}")


def test_processes_starting_together_end_with_one_ca(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = 4
    data_dir = tmp_path / "data"
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_ensure_in_child, args=(str(data_dir), barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    fingerprints = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert len(set(fingerprints)) == 1, fingerprints
    assert fingerprints[0] == der_sha256(data_dir / "tls" / "ca.pem")
    assert not list((data_dir / "tls").glob(".*.tmp"))


# --------------------------------------------------------------------------- the operator's files


def make_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey, name: str, *, ca: bool = False,
          days: int = 90) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture
def operator(tmp_path: Path) -> dict[str, Path]:
    """An operator's CA, an intermediate and a gateway certificate (chain in the cert file)."""
    root, root_key = make_ca("Example Root CA")
    middle, middle_key = issue(root, root_key, "Example Issuing CA", ca=True)
    leaf, leaf_key = issue(middle, middle_key, "gw.example.com")
    site = tmp_path / "site"
    site.mkdir()
    (site / "ca.pem").write_bytes(pem(root))
    (site / "gateway.pem").write_bytes(pem(leaf, middle))
    (site / "gateway.key").write_bytes(key_pem(leaf_key))
    other, other_key = make_ca("Somebody Else's CA")
    (site / "other-ca.pem").write_bytes(pem(other))
    stranger, stranger_key = issue(other, other_key, "gw.example.com")
    (site / "stranger.pem").write_bytes(pem(stranger))
    (site / "stranger.key").write_bytes(key_pem(stranger_key))
    (site / "encrypted.key").write_bytes(key_pem(leaf_key, b"secret"))
    return {"cert": site / "gateway.pem", "key": site / "gateway.key", "ca": site / "ca.pem",
            "other_ca": site / "other-ca.pem", "stranger_cert": site / "stranger.pem",
            "stranger_key": site / "stranger.key", "encrypted_key": site / "encrypted.key"}


def operator_settings(tmp_path: Path, cert: Path | str = "", key: Path | str = "", ca: Path | str = "") -> Settings:
    return settings_for(tmp_path, agent_tls_cert=str(cert), agent_tls_key=str(key), agent_tls_ca=str(ca))


def test_the_operators_files_are_used_as_given(tmp_path, operator):
    files = tls.ensure(operator_settings(tmp_path, operator["cert"], operator["key"], operator["ca"]))
    assert files == tls.TlsFiles(ca_cert=operator["ca"], cert=operator["cert"], key=operator["key"],
                                 ca_fingerprint=der_sha256(operator["ca"]))
    assert not (tmp_path / "data" / "tls").exists()


def test_a_missing_operator_ca_is_a_config_error(tmp_path, operator):
    with pytest.raises(ConfigError) as caught:
        tls.ensure(operator_settings(tmp_path, operator["cert"], operator["key"]))
    assert str(caught.value).startswith("agent_tls_ca is not set but agent_tls_cert and agent_tls_key are")
    assert "all three" in str(caught.value)


def test_a_key_that_is_not_the_certificates_is_a_config_error(tmp_path, operator):
    with pytest.raises(ConfigError, match=r"agent_tls_key .*stranger\.key is not the key of agent_tls_cert "):
        tls.ensure(operator_settings(tmp_path, operator["cert"], operator["stranger_key"], operator["ca"]))


def test_a_certificate_the_ca_did_not_sign_is_a_config_error(tmp_path, operator):
    with pytest.raises(ConfigError) as caught:
        tls.ensure(operator_settings(tmp_path, operator["stranger_cert"], operator["stranger_key"], operator["ca"]))
    message = str(caught.value)
    assert "is not signed by agent_tls_ca" in message and "Somebody Else's CA" in message
    assert "Example Root CA" in message


@pytest.mark.parametrize("problem, expected", [
    ("missing", "agent_tls_ca .*missing.pem cannot be read: No such file or directory"),
    ("not_pem", "agent_tls_ca .*not-pem.pem holds no PEM certificate"),
    ("encrypted_key", "agent_tls_key .*encrypted.key is encrypted"),
    ("key_as_cert", "agent_tls_cert .*gateway.key holds no PEM certificate"),
])
def test_unreadable_or_wrong_operator_files_are_config_errors(tmp_path, operator, problem, expected):
    cert, key, ca = operator["cert"], operator["key"], operator["ca"]
    if problem == "missing":
        ca = tmp_path / "missing.pem"
    elif problem == "not_pem":
        ca = tmp_path / "not-pem.pem"
        ca.write_bytes(ssl.PEM_cert_to_DER_cert(operator["ca"].read_text()))
    elif problem == "encrypted_key":
        key = operator["encrypted_key"]
    else:
        cert = operator["key"]
    with pytest.raises(ConfigError, match=expected):
        tls.ensure(operator_settings(tmp_path, cert, key, ca))


# --------------------------------------------------------------------------- handshakes


@contextmanager
def tls_server(context: ssl.SSLContext) -> Iterator[int]:
    """A one-connection TLS server on 127.0.0.1; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(10)
            try:
                with context.wrap_socket(connection, server_side=True) as secure:
                    secure.sendall(b"hello")
            except (ssl.SSLError, OSError):
                pass  # the client refused us: what some tests want

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(10)


def handshake(port: int, cafile: Path, server_hostname: str) -> bytes:
    """Connect as an agent does: trusting only the pinned CA file."""
    client = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname=server_hostname) as secure:
            return secure.recv(5)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_a_client_pinning_only_the_ca_completes_a_handshake(tmp_path, server_hostname):
    files = tls.ensure(settings_for(tmp_path))
    with tls_server(tls.server_context(files)) as port:
        assert handshake(port, files.ca_cert, server_hostname) == b"hello"


def test_a_client_pinning_another_ca_fails_the_handshake(tmp_path):
    files = tls.ensure(settings_for(tmp_path / "one"))
    other = tls.ensure(settings_for(tmp_path / "two"))
    assert other.ca_fingerprint != files.ca_fingerprint
    with tls_server(tls.server_context(files)) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            handshake(port, other.ca_cert, "localhost")


def test_a_name_the_certificate_does_not_carry_fails_the_handshake(tmp_path):
    files = tls.ensure(settings_for(tmp_path))
    with tls_server(tls.server_context(files)) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(port, files.ca_cert, "elsewhere.example.com")


def test_the_operators_chain_completes_a_handshake_pinning_their_ca(tmp_path, operator):
    files = tls.ensure(operator_settings(tmp_path, operator["cert"], operator["key"], operator["ca"]))
    with tls_server(tls.server_context(files)) as port:
        assert handshake(port, files.ca_cert, "localhost") == b"hello"


def test_server_context_refuses_tls_1_1(tmp_path):
    assert tls.server_context(tls.ensure(settings_for(tmp_path))).minimum_version == ssl.TLSVersion.TLSv1_2
