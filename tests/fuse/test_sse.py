"""SSE-C (use_sse=custom, load_sse_c) and requester_pays through real mounts.

moto (5.2) ignores SSE-C entirely: it stores the plain content, keeps no key
MD5, sends no x-amz-server-side-encryption-customer-* headers and serves an
SSE-C object to a GET without its key. So most tests here mount through
tests/emulating_proxy.py, which enforces SSE-C in front of moto as AWS
documents it (a GET or HEAD without the object's key is 400, with another key
403, SSE-C headers for a plain object 400; every UploadPart must repeat the
upload's key; answers carry the key MD5). One test mounts moto directly: a
server that ignores SSE-C must work too. What botocore sends per operation is
checked at the store level in tests/store/test_sse_c.py.

requester_pays is checked against the signature-checking moto (auth_server),
through a proxy that records every request.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from emulating_proxy import EmulatingProxy
from helpers import ACCESS_KEY, SECRET_KEY, AuthServer, MotoServer, run_s3mount, write_passwd_file

MiB = 1024 * 1024
SMALL_PARTS = ("multipart_threshold=5", "multipart_size=5", "singlepart_copy_limit=5",
               "multipart_copy_size=5")
KEY_A = b"0123456789abcdef0123456789ABCDEF"
KEY_B = bytes(range(100, 132))  # binary: written in base64


def md5_of(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def key_file(path: Path, *keys: bytes) -> Path:
    path.write_text("".join((k.decode() if k.isalnum() else base64.b64encode(k).decode()) + "\n"
                            for k in keys))
    path.chmod(0o600)
    return path


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def sse_proxy(s3_server: MotoServer) -> Iterator[EmulatingProxy]:
    with EmulatingProxy(s3_server.url, sse_c=True) as running:
        yield running


@pytest.fixture
def keys_a(tmp_path: Path) -> Path:
    return key_file(tmp_path / "keys-a", KEY_A)


def client_for(url: str):
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                      request_checksum_calculation="when_required"))


def sse(key: bytes) -> dict[str, object]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def encrypted_with(client, bucket: str, key: str, sse_key: bytes) -> bytes:
    """The object's content read with ``sse_key``; checks that it cannot be read without."""
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=bucket, Key=key)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return client.get_object(Bucket=bucket, Key=key, **sse(sse_key))["Body"].read()


def stored_md5(proxy: EmulatingProxy, bucket: str, key: str) -> str | None:
    return proxy.objects[f"{bucket}/{key}"][1]


def test_files_are_written_and_read_with_the_key(bucket, mount, sse_proxy, keys_a):
    small, big = payload(3000), payload(12 * MiB)
    m = mount(bucket, f"use_sse=custom:{keys_a}", *SMALL_PARTS, url=sse_proxy.url)
    (m.path / "small").write_bytes(small)
    (m.path / "big").write_bytes(big)
    os.mkdir(m.path / "dir")
    assert sse_proxy.counts()["UploadPart"] == 3
    assert m.stop() == 0

    client = client_for(sse_proxy.url)
    assert encrypted_with(client, bucket, "small", KEY_A) == small
    assert encrypted_with(client, bucket, "big", KEY_A) == big
    assert stored_md5(sse_proxy, bucket, "dir/") == md5_of(KEY_A)

    m = mount(bucket, f"use_sse=c:{keys_a}", url=sse_proxy.url)
    assert (m.path / "small").read_bytes() == small
    assert (m.path / "big").read_bytes() == big
    assert os.path.isdir(m.path / "dir")


def test_chmod_and_rename_keep_the_file_readable(bucket, mount, sse_proxy, keys_a):
    data = payload(7 * MiB)
    m = mount(bucket, f"use_sse=custom:{keys_a}", *SMALL_PARTS, url=sse_proxy.url)
    (m.path / "small").write_bytes(b"small file")
    (m.path / "big").write_bytes(data)
    before = sse_proxy.counts()
    os.chmod(m.path / "small", 0o600)  # CopyObject onto itself
    os.rename(m.path / "small", m.path / "moved")  # CopyObject
    os.chmod(m.path / "big", 0o640)  # above singlepart_copy_limit: UploadPartCopy
    os.rename(m.path / "big", m.path / "big-moved")
    after = sse_proxy.counts()
    assert after["CopyObject"] - before["CopyObject"] == 2
    assert after["UploadPartCopy"] - before["UploadPartCopy"] == 4
    assert m.stop() == 0

    client = client_for(sse_proxy.url)
    assert encrypted_with(client, bucket, "moved", KEY_A) == b"small file"
    assert encrypted_with(client, bucket, "big-moved", KEY_A) == data
    m = mount(bucket, f"use_sse=custom:{keys_a}", url=sse_proxy.url)
    assert (m.path / "moved").read_bytes() == b"small file"
    assert (m.path / "moved").stat().st_mode & 0o777 == 0o600
    assert (m.path / "big-moved").read_bytes() == data
    assert (m.path / "big-moved").stat().st_mode & 0o777 == 0o640


def test_partial_overwrite_of_a_multipart_file(bucket, mount, sse_proxy, keys_a):
    data = payload(17 * MiB)
    m = mount(bucket, f"use_sse=custom:{keys_a}", *SMALL_PARTS, url=sse_proxy.url)
    (m.path / "f").write_bytes(data)
    assert m.stop() == 0

    m = mount(bucket, f"use_sse=custom:{keys_a}", *SMALL_PARTS, url=sse_proxy.url)
    before = sse_proxy.counts()
    offset = 6 * MiB + 10
    with open(m.path / "f", "r+b") as f:
        f.seek(offset)
        f.write(b"patched!")
    expected = data[:offset] + b"patched!" + data[offset + 8:]
    after = sse_proxy.counts()
    assert after["UploadPartCopy"] - before["UploadPartCopy"] == 3  # parts 1, 3, 4
    assert after["UploadPart"] - before["UploadPart"] == 1
    assert m.stop() == 0

    assert encrypted_with(client_for(sse_proxy.url), bucket, "f", KEY_A) == expected
    m = mount(bucket, f"use_sse=custom:{keys_a}", url=sse_proxy.url)
    assert (m.path / "f").read_bytes() == expected


def test_key_rotation_with_load_sse_c(tmp_path, bucket, mount, sse_proxy, keys_a):
    m = mount(bucket, f"use_sse=custom:{keys_a}", url=sse_proxy.url)
    (m.path / "old").write_bytes(b"written with A")
    (m.path / "untouched").write_bytes(b"also A")
    assert m.stop() == 0

    # s3fs's rotation: use_sse=custom takes the keys of load_sse_c, the first encrypts.
    history = key_file(tmp_path / "history", KEY_B, KEY_A)
    m = mount(bucket, "use_sse=custom", f"load_sse_c={history}", url=sse_proxy.url)
    assert (m.path / "old").read_bytes() == b"written with A"
    (m.path / "new").write_bytes(b"written with B")
    os.chmod(m.path / "old", 0o600)  # a copy: encrypted again, with B
    assert (m.path / "new").read_bytes() == b"written with B"
    assert m.stop() == 0

    client = client_for(sse_proxy.url)
    assert stored_md5(sse_proxy, bucket, "new") == md5_of(KEY_B)
    assert encrypted_with(client, bucket, "new", KEY_B) == b"written with B"
    assert stored_md5(sse_proxy, bucket, "old") == md5_of(KEY_B)
    assert stored_md5(sse_proxy, bucket, "untouched") == md5_of(KEY_A)

    m = mount(bucket, "use_sse=custom", f"load_sse_c={history}", url=sse_proxy.url)
    assert {p.name: p.read_bytes() for p in m.path.iterdir()} == {
        "old": b"written with A", "new": b"written with B", "untouched": b"also A"}


def test_load_sse_c_alone_reads_and_keeps_keys(s3, bucket, mount, sse_proxy, keys_a):
    client = client_for(sse_proxy.url)
    client.put_object(Bucket=bucket, Key="secret", Body=b"SSE-C object", **sse(KEY_A))
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain object")
    m = mount(bucket, f"load_sse_c={keys_a}", url=sse_proxy.url)
    assert (m.path / "secret").read_bytes() == b"SSE-C object"
    assert (m.path / "plain").read_bytes() == b"plain object"
    (m.path / "new").write_bytes(b"new")
    os.chmod(m.path / "secret", 0o600)
    assert m.stop() == 0
    assert stored_md5(sse_proxy, bucket, "new") is None  # like s3fs: load_sse_c only decrypts
    assert stored_md5(sse_proxy, bucket, "secret") == md5_of(KEY_A)  # a chmod never decrypts
    assert encrypted_with(client, bucket, "secret", KEY_A) == b"SSE-C object"


def test_unknown_key_is_eacces(bucket, mount, sse_proxy, keys_a, tmp_path):
    client_for(sse_proxy.url).put_object(Bucket=bucket, Key="other", Body=b"?", **sse(KEY_B))
    m = mount(bucket, f"use_sse=custom:{keys_a}", url=sse_proxy.url)
    with pytest.raises(PermissionError):
        (m.path / "other").read_bytes()


def test_server_that_ignores_sse_c(s3, bucket, mount, keys_a):
    """moto itself: it answers without key MD5s; the mount keeps sending the key."""
    data = payload(12 * MiB)
    m = mount(bucket, f"use_sse=custom:{keys_a}", *SMALL_PARTS)
    (m.path / "f").write_bytes(data)
    os.chmod(m.path / "f", 0o600)
    os.rename(m.path / "f", m.path / "g")
    with open(m.path / "g", "r+b") as f:
        f.seek(MiB)
        f.write(b"x")
    assert m.stop() == 0
    expected = data[:MiB] + b"x" + data[MiB + 1:]
    m = mount(bucket, f"use_sse=custom:{keys_a}")
    assert (m.path / "g").read_bytes() == expected
    assert s3.get_object(Bucket=bucket, Key="g", **sse(KEY_A))["Body"].read() == expected


def test_debug_log_keeps_the_keys_out(bucket, mount, sse_proxy, tmp_path):
    keys = key_file(tmp_path / "keys", KEY_A, KEY_B)
    m = mount(bucket, f"use_sse=custom:{keys}", "dbglevel=debug", url=sse_proxy.url)
    (m.path / "f").write_bytes(b"data")
    os.rename(m.path / "f", m.path / "g")  # the copy-source key header
    assert (m.path / "g").read_bytes() == b"data"
    assert m.stop() == 0
    log = m.log()
    assert "x-amz-copy-source-server-side-encryption-customer-key" in log.lower()
    assert "[redacted]" in log
    for secret in (KEY_A.decode(), base64.b64encode(KEY_A).decode(),
                   base64.b64encode(KEY_B).decode()):
        assert secret not in log


@pytest.mark.parametrize(("lines", "mode", "message"), [
    ([KEY_A.decode()], 0o644,
     "SSE-C key file {keys} is accessible by group or others (mode 0644); run: chmod 600 {keys}"),
    (["short key"], 0o600,
     "SSE-C key file {keys}, line 1: the key is too short (9 characters): an SSE-C key is 32 "
     "characters, or 32 bytes in base64 (44 characters)"),
    (["# no key"], 0o600, "SSE-C key file {keys} holds no key"),
])
def test_bad_key_file_is_a_one_line_error(tmp_path, s3_server, bucket, passwd_file,
                                          daemon_env, lines, mode, message):
    keys = tmp_path / "keys"
    keys.write_text("\n".join(lines) + "\n")
    keys.chmod(mode)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_s3mount(bucket, str(mountpoint), "-f", "-o",
                         f"url={s3_server.url},passwd_file={passwd_file},use_sse=custom:{keys}",
                         env=daemon_env)
    assert result.returncode == 1
    assert result.stderr == "s3mount: " + message.format(keys=keys) + "\n"
    assert KEY_A.decode() not in result.stderr
    assert not os.path.ismount(mountpoint)


def test_custom_without_keys_is_a_one_line_error(tmp_path, s3_server, bucket, passwd_file,
                                                 daemon_env):
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    result = run_s3mount(bucket, str(mountpoint), "-f", "-o",
                         f"url={s3_server.url},passwd_file={passwd_file},use_sse=custom",
                         env=daemon_env)
    assert result.returncode == 1
    assert result.stderr.startswith("s3mount: use_sse=custom needs SSE-C keys")
    assert result.stderr.count("\n") == 1


def test_requester_pays_header_on_every_request(auth_server: AuthServer, mount, tmp_path):
    """Every request the mount sends carries x-amz-request-payer, signed: the
    signature-checking moto accepts them, and the header is in SignedHeaders."""
    passwd = write_passwd_file(tmp_path / "auth-passwd",
                               f"{auth_server.access_key}:{auth_server.secret_key}\n")
    prefix = f"rp-{uuid.uuid4().hex[:8]}"
    data = payload(11 * MiB)
    with EmulatingProxy(auth_server.server.url) as proxy:
        m = mount(f"{auth_server.bucket}:/{prefix}", "requester_pays", f"passwd_file={passwd}",
                  *SMALL_PARTS, url=proxy.url, credentials=False)
        (m.path / "small").write_bytes(b"small")
        (m.path / "big").write_bytes(data)
        with open(m.path / "big", "r+b") as f:  # UploadPartCopy
            f.seek(6 * MiB)
            f.write(b"x")
        os.chmod(m.path / "small", 0o600)
        os.mkdir(m.path / "dir")
        (m.path / "dir/inner").write_bytes(b"inner")
        os.rename(m.path / "dir", m.path / "dir2")  # DeleteObjects
        assert sorted(os.listdir(m.path)) == ["big", "dir2", "small"]
        os.unlink(m.path / "small")
        assert m.stop() == 0
        m = mount(f"{auth_server.bucket}:/{prefix}", "requester_pays", f"passwd_file={passwd}",
                  url=proxy.url, credentials=False)
        assert (m.path / "big").read_bytes()[6 * MiB - 1:6 * MiB + 2] == data[6 * MiB - 1:6 * MiB] \
            + b"x" + data[6 * MiB + 1:6 * MiB + 2]
        assert m.stop() == 0

    operations = {r.operation for r in proxy.requests}
    assert operations >= {"ListObjects", "HeadObject", "GetObject", "PutObject", "CopyObject",
                          "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
                          "CompleteMultipartUpload", "DeleteObject", "DeleteObjects"}
    for request in proxy.requests:
        assert request.headers.get("x-amz-request-payer") == "requester", request.operation
        signed = request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
        assert "x-amz-request-payer" in signed.split(";"), request.operation
