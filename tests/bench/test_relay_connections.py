"""The benchmark's server and relay: kept connections, end to end.

moto keeps its connections open (``--keep-connections``), as ``make bench``
runs it, or closes each after one answer, as Werkzeug does by itself; the relay
in front must reuse the upstream connection in the first case and open one per
request in the second, and every answer must arrive either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config
from helpers import ACCESS_KEY, SECRET_KEY, free_port, wait_until

BENCH = Path(__file__).resolve().parents[2] / "bench"


class Relayed:
    """moto_server.py with a relay.py in front, both our children."""

    def __init__(self, log_dir: Path, keep_connections: bool) -> None:
        port = free_port()
        self.server_url = f"http://127.0.0.1:{port}"
        flags = ["--keep-connections"] if keep_connections else ["--dispatch-only"]
        self._log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        self.server = subprocess.Popen(
            [sys.executable, str(BENCH / "moto_server.py"), *flags,
             "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.relay = subprocess.Popen(
            [sys.executable, str(BENCH / "relay.py"), "--upstream", self.server_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.relay_url = f"http://127.0.0.1:{self._answer()['port']}"
        probe = self.client(self.server_url)

        def answering() -> bool:
            if self.server.poll() is not None:
                raise RuntimeError(f"moto exited: {(log_dir / 'moto.log').read_text()}")
            try:
                probe.list_buckets()
            except Exception:
                return False
            return True

        wait_until(answering, 30, "the moto server")

    def _answer(self) -> dict:
        return json.loads(self.relay.stdout.readline())

    def stats(self) -> dict:
        self.relay.stdin.write("stats\n")
        return self._answer()

    @staticmethod
    def client(url: str, connections: int = 1):
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=connections,
                          retries={"max_attempts": 1}, read_timeout=20,
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def stop(self) -> None:
        for process in (self.relay, self.server):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()


@pytest.fixture(params=[True, False], ids=["kept", "closed"])
def relayed(request, tmp_path: Path) -> Iterator[Relayed]:
    setup = Relayed(tmp_path, keep_connections=request.param)
    yield setup
    setup.stop()


def a_mix_of_requests(client) -> int:
    """Requests of every shape the bench sends; returns how many were sent."""
    client.create_bucket(Bucket="relayed")
    # botocore sends "Expect: 100-continue" with every PutObject, also an empty one.
    client.put_object(Bucket="relayed", Key="dir/", Body=b"")
    client.put_object(Bucket="relayed", Key="small", Body=b"x" * 4096)
    client.put_object(Bucket="relayed", Key="big", Body=b"y" * (3 << 20))
    assert client.head_object(Bucket="relayed", Key="small")["ContentLength"] == 4096
    body = client.get_object(Bucket="relayed", Key="big", Range="bytes=0-99")["Body"].read()
    assert body == b"y" * 100
    with pytest.raises(client.exceptions.ClientError):
        client.head_object(Bucket="relayed", Key="missing")  # an error answer
    keys = [item["Key"] for item in client.list_objects_v2(Bucket="relayed")["Contents"]]
    assert keys == ["big", "dir/", "small"]
    return 8


def test_every_answer_arrives_through_the_relay(relayed: Relayed) -> None:
    sent = a_mix_of_requests(relayed.client(relayed.relay_url))
    direct = relayed.client(relayed.server_url)
    assert direct.get_object(Bucket="relayed", Key="dir/")["ContentLength"] == 0
    assert direct.get_object(Bucket="relayed", Key="big")["Body"].read() == b"y" * (3 << 20)
    stats = relayed.stats()
    assert stats["requests"] == sent
    assert stats["errors"] == {}


def test_the_upstream_connection_is_kept_when_the_server_keeps_it(relayed: Relayed) -> None:
    sent = a_mix_of_requests(relayed.client(relayed.relay_url))
    stats = relayed.stats()
    assert stats["connections"] == 1  # one client connection (botocore keeps it)
    keeps = "--keep-connections" in relayed.server.args
    assert stats["upstream_connections"] == (1 if keeps else sent)
