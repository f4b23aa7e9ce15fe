"""The agent gateway's TLS: provisiond's own CA unless the operator configures theirs.

Agents pin the CA (by the SHA-256 of its DER encoding, handed to ``%post``
with the enrollment ticket), so the CA must outlive every certificate it
signs: once made it is never replaced by provisiond.

* The operator's files (``agent_tls_cert``, ``agent_tls_key``,
  ``agent_tls_ca``, all three or none) are used as given after checking
  that they are PEM, that the key is the certificate's and that the CA
  signed the certificate (directly, or through intermediates that follow
  the certificate in ``agent_tls_cert``).
* Otherwise ``data_dir/tls`` (mode 0700) holds provisiond's own:

  ============  ==========================================================
  ``ca.pem``    the CA certificate agents pin (ECDSA P-256, 10 years)
  ``ca.key``    its key (0600)
  ``server.pem``  the gateway's certificate, signed by the CA (825 days)
  ``server.key``  its key (0600)
  ``.lock``     ``flock``-ed around every check-and-create
  ============  ==========================================================

  The server certificate is re-issued from the same CA when it stops naming
  what the settings ask for or expires within 30 days. A re-issued
  certificate keeps the names of the one it replaces, so two roles (or
  machines) with different names do not take turns re-issuing it; delete
  ``server.pem`` to drop a name.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisiond.config import Settings
from provisiond.errors import ConfigError

log = logging.getLogger("provisiond.tls")

CA_LIFETIME = timedelta(days=3652)
SERVER_LIFETIME = timedelta(days=825)
#: A server certificate this close to its end is re-issued.
RENEW_BEFORE = timedelta(days=30)
#: Certificates start a little in the past: a client whose clock is a few
#: minutes behind still accepts a certificate made a moment ago.
BACKDATE = timedelta(minutes=5)

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, LOCK = "ca.pem", "ca.key", "server.pem", "server.key", ".lock"

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class TlsFiles:
    """What the gateway loads (``cert``, ``key``) and what agents get (``ca_cert``, ``ca_fingerprint``)."""

    ca_cert: Path
    cert: Path
    key: Path
    #: SHA-256 (lower-case hex) of the CA certificate's DER encoding: what agents pin.
    ca_fingerprint: str


def fingerprint(pem_path: str | os.PathLike[str]) -> str:
    """The pin of the (first) certificate in ``pem_path``: SHA-256 of its DER, lower-case hex."""
    path = Path(pem_path)
    return _fingerprint(_read_certificates(path, f"certificate file {path}")[0])


def ensure(settings: Settings) -> TlsFiles:
    """The gateway's certificate, key and CA: the operator's when any of
    ``agent_tls_*`` is set, else provisiond's own in ``data_dir/tls``, made
    on the first call and re-issued when needed. Safe to call from several
    processes at once; cheap when nothing has to change."""
    if settings.agent_tls_cert or settings.agent_tls_key or settings.agent_tls_ca:
        return _operator_files(settings)
    return _own_files(settings.data_dir / "tls", wanted_names(settings))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the gateway's certificate (for tests and tools)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


# --------------------------------------------------------------------------- names


def wanted_names(settings: Settings) -> list[x509.GeneralName]:
    """The subjectAltNames the gateway's certificate must carry: this
    machine's names, localhost, the loopback addresses, netboot_address,
    the host of agent_public_url and every agent_server_names entry."""
    names: list[x509.GeneralName] = []
    for machine_name in (*_machine_names(), "localhost"):
        name = _general_name(machine_name)
        if name is not None:  # a host name DNS cannot carry is left out, not fatal
            names.append(name)
    for entry in settings.agent_server_names:
        if entry.strip():
            names.append(_required_name(entry, "agent_server_names"))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    if settings.netboot_address:
        names.append(_required_name(settings.netboot_address, "netboot_address"))
    if settings.agent_public_url:
        try:
            host = urlsplit(settings.agent_public_url).hostname
        except ValueError as exc:
            raise ConfigError(f"agent_public_url {settings.agent_public_url!r} is not a URL: {exc}") from None
        if host:
            names.append(_required_name(host, "agent_public_url"))
    return list(dict.fromkeys(names))


@functools.lru_cache(maxsize=1)
def _machine_names() -> tuple[str, ...]:
    """This machine's FQDN and host name, looked up once per process:
    ``getfqdn`` can wait on DNS, and ensure() runs on requests."""
    return tuple(name for name in (socket.getfqdn(), socket.gethostname()) if name)


def _general_name(text: str) -> x509.GeneralName | None:
    """An IP address or DNS name as a subjectAltName entry, None if it is neither."""
    bare = text.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        return x509.IPAddress(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = bare.rstrip(".").lower()
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        return None
    return x509.DNSName(name)


def _required_name(text: str, setting: str) -> x509.GeneralName:
    name = _general_name(text)
    if name is None:
        raise ConfigError(f"{setting}: {text!r} is neither a DNS name nor an IP address; "
                          "give names like gw.example.com or addresses like 10.0.0.1")
    return name


def _cert_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """A certificate's subjectAltNames, DNS names in lower case (as :func:`wanted_names` makes them)."""
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [x509.DNSName(name.value.lower()) if isinstance(name, x509.DNSName) else name for name in present]


def _describe(names: Iterable[x509.GeneralName]) -> str:
    return ", ".join(str(name.value) for name in names)


# --------------------------------------------------------------------------- the operator's files


def _operator_files(settings: Settings) -> TlsFiles:
    """The operator's certificate, key and CA, checked so that a mistake
    stops the gateway with a message instead of failing every agent."""
    given = {"agent_tls_cert": settings.agent_tls_cert, "agent_tls_key": settings.agent_tls_key,
             "agent_tls_ca": settings.agent_tls_ca}
    missing = [setting for setting, value in given.items() if not value]
    if missing:
        present = [setting for setting, value in given.items() if value]
        raise ConfigError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set but "
            f"{' and '.join(present)} {'is' if len(present) == 1 else 'are'}: the agent gateway needs all three of "
            "agent_tls_cert, agent_tls_key and agent_tls_ca (the CA that signed the certificate, which agents "
            f"pin), or none of them for provisiond's own CA in {settings.data_dir / 'tls'}"
        )
    cert_path, key_path, ca_path = (Path(value).expanduser().absolute() for value in given.values())
    chain = _read_certificates(cert_path, f"agent_tls_cert {cert_path}")
    key = _read_private_key(key_path, f"agent_tls_key {key_path}")
    cas = _read_certificates(ca_path, f"agent_tls_ca {ca_path}")
    if len(cas) != 1:
        raise ConfigError(f"agent_tls_ca {ca_path} holds {len(cas)} certificates: agents pin one CA; keep only "
                          "the CA that signed the chain in it and put intermediates after the certificate in "
                          f"agent_tls_cert {cert_path}")
    leaf, ca = chain[0], cas[0]
    if not _key_matches(key, leaf):
        raise ConfigError(f"agent_tls_key {key_path} is not the key of agent_tls_cert {cert_path} "
                          f"({leaf.subject.rfc4514_string()}): give the key the certificate was made for")
    if not _chains_to(leaf, chain[1:], ca):
        raise ConfigError(
            f"agent_tls_cert {cert_path} ({leaf.subject.rfc4514_string()}, issued by "
            f"{leaf.issuer.rfc4514_string()}) is not signed by agent_tls_ca {ca_path} "
            f"({ca.subject.rfc4514_string()}): set agent_tls_ca to the CA that issued it, with any "
            "intermediate certificates after the certificate in agent_tls_cert"
        )
    now = datetime.now(timezone.utc)
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(f"agent_tls_cert {cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: "
                          "renew it (agents refuse an expired certificate)")
    return TlsFiles(ca_cert=ca_path, cert=cert_path, key=key_path, ca_fingerprint=_fingerprint(ca))


def _chains_to(cert: x509.Certificate, intermediates: list[x509.Certificate], ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert``, directly or through ``intermediates``."""
    pool = list(intermediates)
    current = cert
    while True:
        if _issued_by(current, ca):
            return True
        issuer = next((candidate for candidate in pool if _issued_by(current, candidate)), None)
        if issuer is None:
            return False
        pool.remove(issuer)
        current = issuer


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _key_matches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


# --------------------------------------------------------------------------- provisiond's own CA


def _own_files(directory: Path, names: list[x509.GeneralName]) -> TlsFiles:
    """Check-and-create under an exclusive lock: two roles starting at once
    end with one CA, the second reusing what the first made."""
    _private_directory(directory)
    try:
        with _locked(directory / LOCK):
            for stale in directory.glob(".*.tmp"):  # a crashed writer's; nobody writes while we hold the lock
                stale.unlink(missing_ok=True)
            ca = _ca(directory)
            now = datetime.now(timezone.utc)
            reason, keep = _server_problem(directory, ca, names, now)
            if reason:
                _issue_server(directory, ca, list(dict.fromkeys([*names, *keep])), now, reason)
    except OSError as exc:
        raise ConfigError(f"cannot write the agent gateway's TLS files in {directory}: {exc}; "
                          "make data_dir writable by provisiond's user") from exc
    return TlsFiles(ca_cert=directory / CA_CERT, cert=directory / SERVER_CERT, key=directory / SERVER_KEY,
                    ca_fingerprint=_fingerprint(ca))


def _private_directory(directory: Path) -> None:
    """``data_dir/tls`` readable by provisiond's user only: it holds the CA's key."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o777 != 0o700:
            directory.chmod(0o700)
    except OSError as exc:
        raise ConfigError(f"cannot make {directory} (mode 0700) for the agent gateway's CA: {exc.strerror}; "
                          "make data_dir writable by provisiond's user") from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ca(directory: Path) -> x509.Certificate:
    """The CA certificate, made (with its key) when there is none. An
    existing ``ca.pem`` is never replaced: agents pin it."""
    path = directory / CA_CERT
    if path.exists():
        certificates = _parse_certificates(_read_bytes(path, f"provisiond's CA certificate {path}"))
        if not certificates:
            raise ConfigError(f"provisiond's CA certificate {path} is damaged (no PEM certificate in it). Agents "
                              f"pin this CA: restore it from a backup; moving it away makes provisiond create a "
                              "new CA that no installed agent trusts")
        return certificates[0]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_ca(key, datetime.now(timezone.utc))
    # The key first: ca.pem without its key would be a CA nobody can sign with.
    _write_atomic(directory / CA_KEY, _key_pem(key), 0o600)
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("made provisiond's CA for the agent gateway: certificate %s, key %s; agents pin its SHA-256 "
             "fingerprint %s", path, directory / CA_KEY, _fingerprint(cert))
    return cert


def _make_ca(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(f"provisiond CA {socket.gethostname()}"))])
    subject_key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    start = now - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(subject_key_id, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(subject_key_id), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_problem(directory: Path, ca: x509.Certificate, names: list[x509.GeneralName],
                    now: datetime) -> tuple[str, list[x509.GeneralName]]:
    """Why the server certificate must be (re-)issued ("" if it need not),
    and the names it carries that a re-issued one keeps."""
    path = directory / SERVER_CERT
    if not path.exists():
        return "there was none", []
    try:
        cert = _read_certificates(path, str(path))[0]
        key = _read_private_key(directory / SERVER_KEY, str(directory / SERVER_KEY))
    except ConfigError as exc:
        return str(exc), []
    if not _issued_by(cert, ca):
        return "the old one was not signed by the current CA", []
    present = _cert_names(cert)
    if not _key_matches(key, cert):
        return "the old one did not match its key", present
    missing = [name for name in names if name not in present]
    if missing:
        return f"the old one did not name {_describe(missing)}", present
    if cert.not_valid_after_utc - now < RENEW_BEFORE and cert.not_valid_after_utc < ca.not_valid_after_utc:
        return f"the old one expires on {cert.not_valid_after_utc:%Y-%m-%d}", present
    return "", present


def _issue_server(directory: Path, ca: x509.Certificate, names: list[x509.GeneralName], now: datetime,
                  reason: str) -> None:
    """A new server key and certificate from the existing CA."""
    ca_key = _ca_key(directory, ca)
    key = ec.generate_private_key(ec.SECP256R1())
    start = now - BACKDATE
    # Never past the CA's end: a client would reject the certificate then anyway.
    end = min(start + SERVER_LIFETIME, ca.not_valid_after_utc)
    common_name = _common_name((*_machine_names(), "provisiond")[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # The key first: a crash between the two leaves a pair that does not
    # match, which the next call re-issues.
    _write_atomic(directory / SERVER_KEY, _key_pem(key), 0o600)
    _write_atomic(directory / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("issued the agent gateway's certificate %s (key %s) for %s, valid until %s, signed by the CA %s "
             "(fingerprint %s): %s", directory / SERVER_CERT, directory / SERVER_KEY, _describe(names),
             f"{end:%Y-%m-%d}", directory / CA_CERT, _fingerprint(ca), reason)
    if ca.not_valid_after_utc - now < RENEW_BEFORE:
        log.warning("provisiond's CA %s expires on %s: make a new one (move %s and %s away) and give every agent "
                    "the new CA", directory / CA_CERT, f"{ca.not_valid_after_utc:%Y-%m-%d}", directory / CA_CERT,
                    directory / CA_KEY)


def _ca_key(directory: Path, ca: x509.Certificate) -> ec.EllipticCurvePrivateKey:
    """The CA's key, which must be there to sign: provisiond never makes a
    second CA behind the agents' backs."""
    path = directory / CA_KEY
    problem = ""
    try:
        key = _read_private_key(path, f"the CA key {path}")
    except ConfigError as exc:
        problem = str(exc)
    else:
        if isinstance(key, ec.EllipticCurvePrivateKey) and _key_matches(key, ca):
            return key
        problem = f"the CA key {path} is not the key of {directory / CA_CERT}"
    raise ConfigError(
        f"the agent gateway's certificate must be re-issued but {problem}. Restore {path} from a backup, or "
        f"move {directory / CA_CERT} away to make a new CA (every installed agent then needs the new CA)"
    )


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _common_name(text: str) -> str:
    """X.509 allows 64 characters in a CN; the names that matter are in subjectAltName."""
    return text[:64] or "provisiond"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted: the gateway starts unattended. The file is 0600 in a 0700 directory.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write a private temporary file, then rename it over ``path``: a crash
    leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the exact mode, whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


# --------------------------------------------------------------------------- reading PEM


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read: {exc.strerror or exc}; check the path and that provisiond's "
                          "user may read it") from None


def _read_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """The certificates in a PEM file, in order."""
    certificates = _parse_certificates(_read_bytes(path, what))
    if not certificates:
        raise ConfigError(f"{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
                          "convert it to PEM (openssl x509 -inform der -in FILE)")
    return certificates


def _parse_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _read_private_key(path: Path, what: str) -> PrivateKeyTypes:
    data = _read_bytes(path, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{what} is encrypted: the gateway starts unattended and cannot ask for a passphrase; "
                          "give it an unencrypted key readable only by provisiond's user (chmod 600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{what} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----); "
                          "give the key in PEM") from None
