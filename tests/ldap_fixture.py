"""A real OpenLDAP ``slapd`` for tests: a throw-away cn=config, people and groups, TLS.

``Slapd.start(directory)`` builds a cn=config with ``slapadd -n0`` (core, cosine and
inetorgperson schemas, one mdb database, the memberof overlay), starts ``slapd`` on free
127.0.0.1 ports for ``ldap://`` (StartTLS capable) and ``ldaps://``, loads the entries with
``ldapadd`` (so memberof maintains ``memberOf``) and is stopped by its PID. The server
certificate is issued by a test CA made with ``cryptography``; ``other_ca`` is a second CA that
did not sign it, for the wrong-CA cases.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port, need_program

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-4711"
SERVICE_DN = f"cn=radiusd,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret-0815"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SCHEMAS = ("core", "cosine", "inetorgperson")

# uid → password; groups → members (uids)
USERS = {
    "alice": "alice-directory-pw",
    "bob": "bob-directory-pw",
    "carol": "carol-directory-pw",
    "dave": "dave-directory-pw",
    "erin": "erin-directory-pw",
}
GROUP_MEMBERS = {
    "vpn-admins": ["alice"],
    "vpn-users": ["alice", "bob", "carol"],
    "staff": ["dave"],
}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def _ldif(entries: list[dict]) -> str:
    blocks = []
    for entry in entries:
        lines = [f"dn: {entry['dn']}"]
        for key, values in entry.items():
            if key == "dn":
                continue
            for value in values if isinstance(values, list) else [values]:
                lines.append(f"{key}: {value}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def config_ldif(directory: Path, cert: Path, key: Path) -> str:
    head = _ldif([
        {"dn": "cn=config", "objectClass": "olcGlobal", "cn": "config",
         "olcPidFile": str(directory / "slapd.pid"), "olcTLSCertificateFile": str(cert),
         "olcTLSCertificateKeyFile": str(key)},
        {"dn": "cn=module{0},cn=config", "objectClass": "olcModuleList", "cn": "module{0}",
         "olcModulePath": "/usr/lib/ldap", "olcModuleLoad": ["back_mdb", "memberof"]},
        {"dn": "cn=schema,cn=config", "objectClass": "olcSchemaConfig", "cn": "schema"},
    ])
    includes = "".join(f"include: file:///etc/ldap/schema/{name}.ldif\n\n" for name in SCHEMAS)
    tail = _ldif([
        {"dn": "olcDatabase={-1}frontend,cn=config", "objectClass": ["olcDatabaseConfig", "olcFrontendConfig"],
         "olcDatabase": "{-1}frontend"},
        {"dn": "olcDatabase={0}config,cn=config", "objectClass": "olcDatabaseConfig",
         "olcDatabase": "{0}config", "olcAccess": "{0}to * by * none"},
        {"dn": "olcDatabase={1}mdb,cn=config", "objectClass": ["olcDatabaseConfig", "olcMdbConfig"],
         "olcDatabase": "{1}mdb", "olcSuffix": SUFFIX, "olcRootDN": ROOT_DN, "olcRootPW": ROOT_PASSWORD,
         "olcDbDirectory": str(directory / "data"), "olcDbMaxSize": "33554432",
         # Anonymous may only bind; a bound user (the service account) may read.
         "olcAccess": ["{0}to attrs=userPassword by self write by anonymous auth by * none",
                       "{1}to * by users read by * none"]},
        {"dn": "olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config",
         "objectClass": ["olcOverlayConfig", "olcMemberOf"], "olcOverlay": "{0}memberof"},
    ])
    return head + "\n" + includes + tail


def data_ldif() -> str:
    entries = [
        {"dn": SUFFIX, "objectClass": ["dcObject", "organization"], "dc": "example", "o": "Example"},
        {"dn": f"ou=services,{SUFFIX}", "objectClass": "organizationalUnit", "ou": "services"},
        {"dn": PEOPLE, "objectClass": "organizationalUnit", "ou": "people"},
        {"dn": GROUPS, "objectClass": "organizationalUnit", "ou": "groups"},
        {"dn": SERVICE_DN, "objectClass": ["person", "simpleSecurityObject"], "cn": "radiusd",
         "sn": "radiusd", "userPassword": SERVICE_PASSWORD},
    ]
    for uid, password in USERS.items():
        entries.append({"dn": user_dn(uid), "objectClass": "inetOrgPerson", "uid": uid, "cn": uid.title(),
                        "sn": "Example", "userPassword": password})
    for name, members in GROUP_MEMBERS.items():
        entries.append({"dn": f"cn={name},{GROUPS}", "objectClass": "groupOfNames", "cn": name,
                        "member": [user_dn(uid) for uid in members]})
    return _ldif(entries)


# -- certificates ------------------------------------------------------------------------------

def _name(common_name: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pem(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_ca(directory: Path, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = _write_pem(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(directory: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path = _write_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write_pem(directory / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)
    return cert_path, key_path


# -- the server --------------------------------------------------------------------------------

def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"slapd exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"slapd did not listen on port {port}")


@dataclass
class Slapd:
    directory: Path
    port: int
    tls_port: int
    ca_file: Path
    other_ca_file: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @classmethod
    def start(cls, directory: Path) -> "Slapd":
        need_program("slapd")
        slapadd, ldapadd = need_program("slapadd"), need_program("ldapadd")
        directory.mkdir(parents=True, exist_ok=True)
        confdir, data = directory / "slapd.d", directory / "data"
        confdir.mkdir()
        data.mkdir()
        ca_key, ca_cert, ca_file = make_ca(directory, "test-ca")
        _, _, other_ca_file = make_ca(directory, "other-ca")
        cert, key = make_server_cert(directory, ca_key, ca_cert)
        (directory / "config.ldif").write_text(config_ldif(directory, cert, key))
        subprocess.run([slapadd, "-n0", "-F", str(confdir), "-l", str(directory / "config.ldif")],
                       check=True, capture_output=True, timeout=30)
        server = cls(directory, free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM), ca_file,
                     other_ca_file)
        try:
            server.run()
            (directory / "data.ldif").write_text(data_ldif())
            subprocess.run([ldapadd, "-x", "-H", server.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
                            "-f", str(directory / "data.ldif")], check=True, capture_output=True, timeout=30,
                           env={**os.environ, "LDAPNOINIT": "1"})
        except BaseException:
            server.stop()
            raise
        return server

    def run(self) -> None:
        """Start the slapd process on the configured ports and wait until both listen."""
        log = open(self.directory / "slapd.log", "ab")
        self.process = subprocess.Popen(
            [need_program("slapd"), "-h", f"{self.url}/ {self.tls_url}/", "-F", str(self.directory / "slapd.d"),
             "-d", "0"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "LDAPNOINIT": "1"})
        log.close()
        _wait_for_port(self.port, self.process)
        _wait_for_port(self.tls_port, self.process)

    def restart(self) -> None:
        """Stop and start again: every client connection is closed by the server."""
        self.stop()
        self.run()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log(self) -> str:
        path = self.directory / "slapd.log"
        return path.read_text(errors="replace") if path.exists() else ""
