"""Volume options (Docker's -o and Cloud Foundry's mount_config) → s3mount command
line, and the driver's private state files. Pure logic: nothing mounts here.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from s3mount.errors import S3mountError, UsageError
from s3mount.volume_mounts import _unescape, child_environment
from s3mount.volume_options import volume_spec
from s3mount.volume_state import Volume, VolumeStore, check_name

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_docker_options_are_s3mount_options() -> None:
    spec = volume_spec({"bucket": "photos:/2024", "url": "https://s3.example.com",
                        "passwd_file": "/etc/passwd-s3mount", "allow_other": "",
                        "uid": "1000", "ro": "true", "f2": ""})
    assert spec.source == "photos:/2024"
    assert spec.options == ("url=https://s3.example.com", "passwd_file=/etc/passwd-s3mount",
                            "allow_other", "uid=1000", "ro=true", "f2")
    assert spec.access_key is None and spec.secrets == ()


def test_cloud_foundry_mount_config() -> None:
    spec = volume_spec({"endpoint": "http://127.0.0.1:9000", "access_key_id": "AKIAEXAMPLE",
                        "secret_access_key": SECRET, "bucket": "data", "region": "eu-west-1",
                        "acl": "private", "subdomain": False, "storage_class": "STANDARD_IA",
                        "use_content_type": True, "region_set": True, "mode": "r",
                        "mount_options": {"allow_other": True, "uid": 1000, "umask": "022"}})
    assert spec.source == "data"
    assert spec.options == ("url=http://127.0.0.1:9000", "default_acl=private",
                            "use_path_request_style", "ro", "region=eu-west-1",
                            "storage_class=STANDARD_IA", "allow_other", "uid=1000", "umask=022")
    assert (spec.access_key, spec.secret_key) == ("AKIAEXAMPLE", SECRET)
    assert SECRET not in repr(spec) and SECRET not in " ".join(spec.options)


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"use_sse": "true"}, ("use_sse=1",)),
        ({"use_sse": False}, ()),
        ({"use_sse": "kmsid:abc"}, ("use_sse=kmsid:abc",)),
        ({"use_kms": True}, ("use_sse=kmsid",)),
        ({"use_kms": "true", "kms_key_id": "key-1"}, ("use_sse=kmsid:key-1",)),
        ({"use_kms": True, "use_sse": True}, ("use_sse=kmsid",)),
        ({"endpoint": "us-west-2"}, ("region=us-west-2",)),  # s3fs's meaning
        ({"subdomain": "true"}, ()),
        ({"mode": "rw"}, ("ro=0",)),
        ({"mount_options": {}}, ()),
        ({"x-systemd.automount": ""}, ()),
        ({"ro": False}, ("ro=0",)),
    ],
)
def test_translations(opts: dict, expected: tuple[str, ...]) -> None:
    assert volume_spec({"bucket": "b", **opts}).options == expected


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({}, "the volume needs a bucket: add -o bucket=NAME (or NAME:/PREFIX)"),
        ({"bucket": "b", "colour": "blue"}, "unknown volume option 'colour'"),
        ({"bucket": "b", "mount_options": {"colour": "1"}},
         "unknown option 'colour' in mount_options"),
        ({"bucket": "b", "mount_options": {"endpoint": "http://x"}},
         "give the endpoint URL as url"),
        ({"bucket": "b", "mount_options": "allow_other"}, "must be a map"),
        ({"bucket": "b", "uid": "nobody-such-user"}, "bad value 'nobody-such-user' for option"),
        ({"bucket": "b", "multipart_size": "1"}, "must be at least 5"),
        ({"bucket": "b", "fake_diskfree": "5"}, "not yet supported"),
        ({"bucket": "b", "sigv2": ""}, "not supported"),
        ({"bucket": "b", "access_key_id": "AK"}, "give both access_key_id and"),
        ({"bucket": "b", "access_key_id": "AK", "secret_access_key": "s",
          "passwd_file": "/p"}, "not both"),
        ({"bucket": "b", "endpoint": "s3.example.com"}, "write it as a URL, https://"),
        ({"bucket": "b", "endpoint": "http://a", "url": "http://b"}, "given twice"),
        ({"bucket": "b", "subdomain": "maybe"}, "'subdomain' must be true or false"),
        ({"bucket": "b", "use_content_type": "false"}, "always sets Content-Type"),
        ({"bucket": "b", "mode": "0644"}, "'mode' must be r, ro or rw"),
        ({"bucket": "b", "kms_key_id": "k"}, "kms_key_id needs use_kms=true"),
        ({"bucket": "b", "use_kms": True, "use_sse": "custom:/k"}, "give one"),
        ({"bucket": "b", "uid": False}, "needs a value, not false"),
        ({"bucket": "b", "tmpdir": "/a,b"}, "contains a comma"),
        ({"bucket": "b", "tmpdir": ["/a"]}, "must be a string or a number"),
        ({"bucket": "no/slash"}, "not a valid bucket name"),
        ({"bucket": "b", "rw": "1"}, "takes no value"),
    ],
)
def test_bad_options_are_one_clear_error(opts: dict, message: str) -> None:
    with pytest.raises(UsageError) as info:
        volume_spec(opts)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_secrets_never_in_an_error() -> None:
    with pytest.raises(UsageError) as info:
        volume_spec({"bucket": "b", "access_key_id": "AKIAEXAMPLE",
                     "secret_access_key": SECRET, "uid": "not-a-user-anywhere"})
    assert SECRET not in info.value.message and "AKIAEXAMPLE" not in info.value.message


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "-x", "a b", "x" * 300, None])
def test_bad_volume_names(name: object) -> None:
    with pytest.raises(S3mountError):
        check_name(name)


def test_store_files_are_private_and_round_trip(tmp_path) -> None:
    store = VolumeStore(str(tmp_path / "state"))
    volume = Volume("vol-1", {"bucket": "b", "secret_access_key": SECRET}, {"c1", "c2"},
                    "2026-01-01T00:00:00+00:00")
    store.save(volume)
    passwd = store.write_passwd_file("vol-1", "AKIAEXAMPLE", SECRET)
    for path in (tmp_path / "state" / "volumes" / "vol-1.json", passwd):
        assert stat.S_IMODE((tmp_path / "state" / path).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert Path(passwd).read_text() == f"AKIAEXAMPLE:{SECRET}\n"
    (loaded,) = VolumeStore(str(tmp_path / "state")).load_all().values()
    assert loaded == volume
    store.delete("vol-1")
    assert store.load_all() == {}
    assert not (tmp_path / "state" / "credentials" / "vol-1").exists()


def test_unreadable_volume_file_is_skipped_without_its_content(tmp_path, caplog) -> None:
    store = VolumeStore(str(tmp_path))
    (tmp_path / "volumes" / "bad.json").write_text(json.dumps({"opts": {"k": SECRET}}))
    store.save(Volume("good", {"bucket": "b"}))
    assert list(store.load_all()) == ["good"]
    assert "bad.json" in caplog.text and SECRET not in caplog.text


def test_mountinfo_unescape() -> None:
    assert _unescape("/mnt/a\\040b\\134c") == "/mnt/a b\\c"


def test_child_environment_drops_the_drivers_own_variables() -> None:
    env = child_environment({"PATH": "/bin", "NOTIFY_SOCKET": "/run/n", "S3MOUNT_OPTIONS": "ro",
                             "AWS_REGION": "eu-west-1"})
    assert env == {"PATH": "/bin", "AWS_REGION": "eu-west-1"}


ROOT = Path(__file__).resolve().parents[2]


def docker_volume_create_examples(text: str) -> list[dict[str, str]]:
    """The -o options of every ``docker volume create -d s3mount`` in a document
    (roff escapes and line continuations undone)."""
    text = text.replace("\\-", "-").replace("\\e\n", " ").replace("\\\n", " ")
    examples = []
    for line in text.splitlines():
        if "docker volume create -d s3mount" in line:
            pairs = re.findall(r"-o (\S+)", line)
            examples.append(dict(pair.partition("=")[::2] for pair in pairs))
    return examples


@pytest.mark.parametrize("document", ["README.md", "man/s3mount-volume-driver.8"])
def test_documented_volume_examples_are_valid(document: str) -> None:
    examples = docker_volume_create_examples((ROOT / document).read_text())
    assert examples
    for opts in examples:
        assert volume_spec(opts).source.startswith("mybucket")
