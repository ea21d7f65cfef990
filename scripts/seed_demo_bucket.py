"""Create the demo bucket for scripts/demo.sh: a few objects in s3fs's on-bucket format.

    python scripts/seed_demo_bucket.py --url http://127.0.0.1:PORT --bucket NAME \
        --passwd-file FILE

What it writes, and what the mount shows for it:

- ``README.txt``: a file with s3fs's x-amz-meta-mode/uid/gid/mtime headers,
  so it shows -rw-r--r-- 1000:1000 and a fixed modification time;
- ``dir/``: a directory marker (Content-Type application/x-directory) with mode 0750;
- ``dir/run.sh``: an executable file (mode 0100755);
- ``dir/notes.md``: a file written by a tool that sets no metadata (defaults apply);
- ``latest``: a symbolic link, s3fs-style: mode 0120777 and the target as the body;
- ``photos/2024/a.jpg``, ``photos/2024/b.jpg``: ``photos`` and ``photos/2024`` exist
  only as key prefixes (implicit directories, no marker objects);
- ``archive_$folder$`` and ``archive/2019.tar``: an old-style (s3fs < 1.80) directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import botocore.session
from botocore.config import Config

DIR_TYPE = "application/x-directory"
# A fixed moment (2024-03-01 12:00:00 UTC), so that the listing shows s3fs's mtime
# header and not the upload time.
MTIME = "1709294400"
README = (
    "Hello from s3mount!\n"
    "This file is an S3 object; its mode, owner and time come from x-amz-meta-* headers.\n"
)
# The first bytes of a JPEG file, enough for file(1) to recognise one.
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\0" * 64


def objects() -> list[dict]:
    """put_object parameters (without Bucket) for every demo object."""

    def meta(mode: int, uid: int = 1000, gid: int = 1000) -> dict[str, str]:
        return {"mode": str(mode), "uid": str(uid), "gid": str(gid), "mtime": MTIME}

    return [
        {"Key": "README.txt", "Body": README.encode(), "ContentType": "text/plain",
         "Metadata": meta(0o100644)},
        {"Key": "dir/", "Body": b"", "ContentType": DIR_TYPE, "Metadata": meta(0o040750)},
        {"Key": "dir/run.sh", "Body": b"#!/bin/sh\necho 'hello from a bucket'\n",
         "ContentType": "text/x-sh", "Metadata": meta(0o100755)},
        {"Key": "dir/notes.md", "Body": b"# Notes\n\nUploaded without any metadata.\n",
         "ContentType": "text/markdown"},
        {"Key": "latest", "Body": b"README.txt", "Metadata": meta(0o120777)},
        {"Key": "photos/2024/a.jpg", "Body": JPEG, "ContentType": "image/jpeg"},
        {"Key": "photos/2024/b.jpg", "Body": JPEG * 2, "ContentType": "image/jpeg"},
        {"Key": "archive_$folder$", "Body": b""},
        {"Key": "archive/2019.tar", "Body": b"\0" * 10240, "ContentType": "application/x-tar",
         "Metadata": meta(0o100600, uid=0, gid=0)},
    ]


def read_passwd_file(path: Path) -> tuple[str, str]:
    """ACCESS_KEY:SECRET_KEY from the first non-comment line."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            access_key, _, secret_key = line.partition(":")
            return access_key, secret_key
    sys.exit(f"seed_demo_bucket: no credentials in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the S3 endpoint, e.g. http://127.0.0.1:PORT")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--passwd-file", required=True, type=Path,
                        help="ACCESS_KEY:SECRET_KEY, as for s3mount")
    args = parser.parse_args()

    access_key, secret_key = read_passwd_file(args.passwd_file)
    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=args.url, region_name="us-east-1",
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required"),
    )
    s3.create_bucket(Bucket=args.bucket)
    print(f"created bucket {args.bucket} at {args.url}")
    for params in objects():
        s3.put_object(Bucket=args.bucket, **params)
        headers = [f"Content-Type: {params['ContentType']}"] if "ContentType" in params else []
        headers += [f"x-amz-meta-{k}: {v}" for k, v in params.get("Metadata", {}).items()]
        print(f"  put {params['Key']!r:22} {len(params['Body']):6} bytes  {'; '.join(headers)}")


if __name__ == "__main__":
    main()
