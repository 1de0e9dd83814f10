"""Secured dependency servers for transport tests: a throwaway PKI, NATS with authorization
and TLS, NATS operator-mode JWTs, Redis with passwords/ACL users and TLS, and a TLS proxy.

Everything binds 127.0.0.1 on free ports and lives in the test's temp directory.
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.faults.tcp_proxy import ToggleProxy
from tests.servers import ServerProcess, free_port

# --- PKI ---------------------------------------------------------------------------


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool,
           usage: list | None = None, san: list | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=True,
                          encipher_only=False, decipher_only=False), critical=True)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, name: str = "pixq-test") -> Pki:
    """A fresh CA and leaf certificates (EC P-256: quick to make) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(f"{name} CA", ca_key, _name(f"{name} CA"), ca_key, ca=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    files = {}
    for role, usage, san in (
            ("server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
             [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            ("client", [ExtendedKeyUsageOID.CLIENT_AUTH], [x509.DNSName("pixq-client")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"{name} {role}", key, ca_cert.subject, ca_key, ca=False, usage=usage, san=san)
        (directory / f"{role}.pem").write_bytes(cert.public_bytes(pem))
        _write_key(directory / f"{role}-key.pem", key)
        files[role] = (directory / f"{role}.pem", directory / f"{role}-key.pem")
    return Pki(ca=directory / "ca.pem", server_cert=files["server"][0], server_key=files["server"][1],
               client_cert=files["client"][0], client_key=files["client"][1])


def server_ssl_context(pki: Pki, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# --- NATS --------------------------------------------------------------------------


def nats_server_conf(tmp: Path, body: str, name: str = "nats", port: int | None = None) -> ServerProcess:
    """nats-server with JetStream and ``body`` appended to its configuration file (``port``:
    start again where a stopped one listened, same store)."""
    port = port or free_port()
    store = tmp / f"{name}-store"
    store.mkdir(parents=True, exist_ok=True)
    conf = tmp / f"{name}.conf"
    conf.write_text(f"host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {json.dumps(str(store))} }}\n{body}\n")
    return ServerProcess(name, ["nats-server", "-c", str(conf)], port, tmp / f"{name}.log").start()


def nats_tls_block(pki: Pki, verify_clients: bool = False) -> str:
    lines = [f"cert_file: {json.dumps(str(pki.server_cert))}", f"key_file: {json.dumps(str(pki.server_key))}",
             f"ca_file: {json.dumps(str(pki.ca))}", "timeout: 2"]
    if verify_clients:
        lines.append("verify: true")
    return "tls {\n  " + "\n  ".join(lines) + "\n}"


def new_nkey(prefix: int) -> tuple[str, str]:
    """A fresh NATS key pair of the given kind: (seed, public key)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed.decode(), pair.public_key.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(claims: dict, issuer_seed: str) -> str:
    """A NATS v2 JWT: ed25519-nkey signed by the issuer's seed; jti is the claims' hash."""
    body = {"iat": int(time.time()), **claims}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()) \
        .decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signer = nkeys.from_seed(bytearray(issuer_seed.encode()))
    return f"{header}.{payload}.{_b64(signer.sign(f'{header}.{payload}'.encode()))}"


def creds_text(user_jwt: str, user_seed: str) -> str:
    """The .creds file format that `nsc` writes (and nats-py parses)."""
    return ("-----BEGIN NATS USER JWT-----\n" f"{user_jwt}\n" "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" f"{user_seed}\n" "------END USER NKEY SEED------\n")


@dataclass
class OperatorSetup:
    """Operator, one JetStream-enabled account and a system account (what `nsc` would make)."""

    operator_seed: str
    operator_public: str
    account_seed: str
    account_public: str
    system_public: str
    system_jwt: str

    def config(self, revoked: dict[str, int] | None = None) -> str:
        """nats-server configuration: operator JWT, MEMORY resolver with the accounts preloaded;
        ``revoked`` maps user public keys to the time before which their JWTs are revoked."""
        limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                  "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
                  "max_ack_pending": -1}
        nats_claims = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": "account",
                       "version": 2}
        if revoked:
            nats_claims["revocations"] = revoked
        account_jwt = encode_jwt({"iss": self.operator_public, "sub": self.account_public, "name": "pixq",
                                  "nats": nats_claims}, self.operator_seed)
        operator_jwt = encode_jwt({"iss": self.operator_public, "sub": self.operator_public,
                                   "name": "pixq-test-operator",
                                   "nats": {"type": "operator", "version": 2, "system_account": self.system_public}},
                                  self.operator_seed)
        return (f"operator: {operator_jwt}\nsystem_account: {self.system_public}\nresolver: MEMORY\n"
                f"resolver_preload: {{\n  {self.account_public}: {account_jwt}\n"
                f"  {self.system_public}: {self.system_jwt}\n}}")

    def user_creds(self, path: Path, name: str = "pixq") -> str:
        """A user of the account, signed by the account key, written as a .creds file;
        returns the user's public key."""
        seed, public = new_nkey(nkeys.PREFIX_BYTE_USER)
        jwt = encode_jwt({"iss": self.account_public, "sub": public, "name": name,
                          "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                                   "type": "user", "version": 2}}, self.account_seed)
        path.write_text(creds_text(jwt, seed))
        path.chmod(0o600)
        return public


def operator_setup() -> OperatorSetup:
    op_seed, op_public = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    acc_seed, acc_public = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    _, sys_public = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    system_jwt = encode_jwt({"iss": op_public, "sub": sys_public, "name": "SYS",
                             "nats": {"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                                                 "exports": -1, "wildcards": True, "conn": -1, "leaf": -1},
                                      "default_permissions": {"pub": {}, "sub": {}},
                                      "type": "account", "version": 2}}, op_seed)
    return OperatorSetup(operator_seed=op_seed, operator_public=op_public, account_seed=acc_seed,
                         account_public=acc_public, system_public=sys_public, system_jwt=system_jwt)


# --- Redis -------------------------------------------------------------------------


def redis_server_conf(tmp: Path, lines: list[str], name: str = "redis", tls: Pki | None = None,
                      auth_clients: bool = False) -> ServerProcess:
    """redis-server with extra configuration lines; with ``tls`` it listens only on a TLS port."""
    port = free_port()
    data = tmp / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    conf = ["bind 127.0.0.1", f"dir {data}", 'save ""', "appendonly no"]
    if tls:
        conf += ["port 0", f"tls-port {port}", f"tls-cert-file {tls.server_cert}", f"tls-key-file {tls.server_key}",
                 f"tls-ca-cert-file {tls.ca}", f"tls-auth-clients {'yes' if auth_clients else 'no'}"]
    else:
        conf.append(f"port {port}")
    path = tmp / f"{name}.conf"
    path.write_text("\n".join([*conf, *lines]) + "\n")
    return ServerProcess(name, ["redis-server", str(path)], port, tmp / f"{name}.log").start()


# --- TLS in front of a plain TCP service ------------------------------------------------


def tls_proxy(upstream: str, context: ssl.SSLContext) -> ToggleProxy:
    """Terminates TLS (test certificate) in front of a plain ``host:port`` upstream: an HTTPS
    endpoint for moto's S3. ``accepted`` counts the TLS connections clients made."""
    host, _, port = upstream.rpartition(":")
    return ToggleProxy(host, int(port), tls=context)
