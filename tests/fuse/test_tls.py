"""TLS: a server whose certificate comes from a private CA is refused unless
the CA is given (ca_bundle, AWS_CA_BUNDLE, CURL_CA_BUNDLE) or verification is
turned off (no_check_certificate). Each test sets the CA variables it relies
on; the daemon gets an explicit environment without the machine's.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import ACCESS_KEY, SECRET_KEY, MotoServer, run_s3mount

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.store import Store, StoreSettings


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("s3mount test CA"))
          .issuer_name(_name("s3mount test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = _write_certificates(directory)
    server = MotoServer(directory / "moto.log", tls=(cert, key))
    s3 = server.client(verify=str(ca))
    s3.create_bucket(Bucket="tlsbucket")
    s3.put_object(Bucket="tlsbucket", Key="secure.txt", Body=b"over tls\n")
    yield server, ca
    server.stop()


@pytest.mark.parametrize("trust", ["ca_bundle", "AWS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                   "no_check_certificate"])
def test_trusted_server_mounts(tls, mount, daemon_env, trust):
    server, ca = tls
    env = dict(daemon_env)
    options = []
    if trust == "ca_bundle":
        options.append(f"ca_bundle={ca}")
    elif trust == "no_check_certificate":
        options.append(trust)
    else:
        env[trust] = str(ca)
    m = mount("tlsbucket", *options, env=env, url=server.url)
    assert (m.path / "secure.txt").read_bytes() == b"over tls\n"


def test_untrusted_certificate_is_refused(tls, passwd_file, tmp_path, daemon_env):
    server, _ = tls
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_s3mount("tlsbucket", str(mountpoint), "-f", "-o",
                         f"url={server.url},passwd_file={passwd_file},retries=0",
                         env=daemon_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate verify failed" in lines[0], result.stderr
    assert "ca_bundle" in lines[0]


def test_missing_ca_bundle_file(tls, passwd_file, tmp_path, daemon_env):
    server, _ = tls
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_s3mount("tlsbucket", str(mountpoint), "-f", "-o",
                         f"url={server.url},passwd_file={passwd_file},"
                         f"ca_bundle={tmp_path}/none.pem", env=daemon_env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"s3mount: CA bundle {tmp_path}/none.pem does not exist: check -o ca_bundle=")


def test_heads_verify_the_certificate_as_every_request_does(tls, monkeypatch):
    """HEADs go out on connections of their own (lean_head._KeptConnections):
    they trust what the client trusts, and a refused certificate is not retried."""
    server, ca = tls
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)

    def store(verify: bool | str | None) -> Store:
        return Store(StoreSettings(bucket="tlsbucket", url=server.url, region="us-east-1",
                                   path_style=True, verify=verify, retries=2,
                                   retry_base_delay=0.01),
                     Credentials(ACCESS_KEY, SECRET_KEY))

    trusted = store(str(ca))
    assert trusted._lean_head is not None and trusted._lean_head._kept is not None
    info = trusted.head("secure.txt")
    assert info is not None and info.size == len(b"over tls\n")
    assert store(False).head("secure.txt") is not None

    untrusted = store(None)
    with pytest.raises(FsError) as caught:
        untrusted.head("secure.txt")
    assert "certificate verify failed" in caught.value.detail
    assert untrusted.request_counts()["head_object"] == 1
