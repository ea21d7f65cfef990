"""enable_content_md5 and enable_unsigned_payload through a real mount, against the
signature-checking moto behind a recording proxy (tests/store/test_upload_integrity.py
has the Store-level cases)."""

from __future__ import annotations

import base64
import hashlib
import uuid

from emulating_proxy import EmulatingProxy
from helpers import AuthServer, payload, write_passwd_file
from s3proxy import Answer, ProxyRequest, Rule

MiB = 1024 * 1024
UPLOADS = ("PutObject", "UploadPart")


def test_uploads_carry_content_md5_and_an_unsigned_payload(auth_server: AuthServer,
                                                           mount, tmp_path) -> None:
    passwd = write_passwd_file(tmp_path / "auth-passwd",
                               f"{auth_server.access_key}:{auth_server.secret_key}\n")
    prefix = f"md5-{uuid.uuid4().hex[:8]}"
    big = payload(11 * MiB, seed=3)
    seen: list[tuple[str, str | None, str, str | None]] = []

    def record(request: ProxyRequest) -> bool:
        if request.operation in UPLOADS:
            seen.append((request.operation, request.headers.get("content-md5"),
                         base64.b64encode(hashlib.md5(request.body).digest()).decode(),
                         request.headers.get("x-amz-content-sha256")))
        return False

    with EmulatingProxy(auth_server.server.url) as proxy:
        proxy.add(Rule(record, Answer(500, "NeverSent")))
        m = mount(f"{auth_server.bucket}:/{prefix}", "enable_content_md5",
                  "enable_unsigned_payload", f"passwd_file={passwd}",
                  "multipart_threshold=5", "multipart_size=5", url=proxy.url, credentials=False)
        (m.path / "small").write_bytes(b"small")
        (m.path / "big").write_bytes(big)
        assert m.stop() == 0

    assert {operation for operation, *_ in seen} == set(UPLOADS)
    for operation, sent_md5, body_md5, content_sha256 in seen:
        assert sent_md5 == body_md5, operation
        assert content_sha256 == "UNSIGNED-PAYLOAD", operation
    s3 = auth_server.server.client("s3", auth_server.access_key, auth_server.secret_key)
    stored = s3.get_object(Bucket=auth_server.bucket, Key=f"{prefix}/big")["Body"].read()
    assert stored == big
