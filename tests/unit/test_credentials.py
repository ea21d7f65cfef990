"""Unit tests of s3mount.credentials.

Every test passes `environ`, `home` and `system_passwd_files` explicitly, so the
machine's own AWS_* variables, ~/.aws and /etc/passwd-s3fs never take part.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from s3mount import credentials
from s3mount.credentials import (
    DEFAULT_PASSWD_FILES,
    Credentials,
    check_passwd_file_permissions,
    parse_passwd_file,
    resolve_credentials,
)
from s3mount.errors import CredentialsError, S3mountError

BUCKET = "mybucket"
ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRET"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN"


def write(path: Path, text: str | bytes, mode: int = 0o600) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return str(path)


def assert_safe_message(exc: pytest.ExceptionInfo[CredentialsError], *fragments: str) -> str:
    """The message is one line, contains every fragment and none of the secrets."""
    message = str(exc.value)
    assert message == exc.value.message
    assert "\n" not in message
    assert SECRET not in message
    assert TOKEN not in message
    for fragment in fragments:
        assert fragment in message
    return message


class Machine:
    """A fake home directory and /etc under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.etc_s3mount = root / "etc" / "passwd-s3mount"
        self.etc_s3fs = root / "etc" / "passwd-s3fs"
        self.system = [str(self.etc_s3mount), str(self.etc_s3fs)]
        self.aws_credentials = self.home / ".aws" / "credentials"

    def resolve(self, env: dict[str, str] | None = None, **kwargs: Any) -> Credentials | None:
        return resolve_credentials(
            BUCKET,
            environ=env or {},
            home=str(self.home),
            system_passwd_files=self.system,
            **kwargs,
        )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


# --- passwd file format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"{ACCESS}:{SECRET}\n", (ACCESS, SECRET), id="access:secret"),
        pytest.param(f"{ACCESS}:{SECRET}", (ACCESS, SECRET), id="no-final-newline"),
        pytest.param(f"{ACCESS}:{SECRET}\r\n", (ACCESS, SECRET), id="crlf"),
        pytest.param(
            f"# a comment\n\n   \n\t\n  # indented comment with spaces\n{ACCESS}:{SECRET}\n",
            (ACCESS, SECRET),
            id="comments-and-blank-lines",
        ),
        pytest.param(
            f"other:O:OSECRET\nDEF:DEFSECRET\n{BUCKET}:{ACCESS}:{SECRET}\n",
            (ACCESS, SECRET),
            id="bucket-entry-beats-default-after-it",
        ),
        pytest.param(
            f"{BUCKET}:{ACCESS}:{SECRET}\nDEF:DEFSECRET\nother:O:OSECRET\n",
            (ACCESS, SECRET),
            id="bucket-entry-beats-default-before-it",
        ),
        pytest.param(
            f"other:O:OSECRET\n{ACCESS}:{SECRET}\n", (ACCESS, SECRET), id="default-for-bucket"
        ),
        pytest.param(f":{ACCESS}:{SECRET}\n", (ACCESS, SECRET), id="empty-bucket-name-is-default"),
        pytest.param(
            f"{BUCKET}:AK:MORE:{SECRET}\n", ("AK:MORE", SECRET), id="access-between-colons"
        ),
        pytest.param(f"{ACCESS}:{SECRET}=\n", (ACCESS, f"{SECRET}="), id="equals-in-secret"),
        pytest.param(
            f"AWSAccessKeyId={ACCESS}\nAWSSecretKey={SECRET}\n",
            (ACCESS, SECRET),
            id="aws-key-value-format",
        ),
        pytest.param(
            f"AWSSecretKey={SECRET}=\nAWSAccessKeyId={ACCESS}\n",
            (ACCESS, f"{SECRET}="),
            id="aws-key-value-any-order",
        ),
        pytest.param(
            f"{BUCKET}:B:BSECRET\nAWSAccessKeyId={ACCESS}\nDEF:DEFSECRET\nAWSSecretKey={SECRET}\n",
            (ACCESS, SECRET),
            id="key-value-beats-colon-entries",
        ),
        pytest.param(
            f"\ufeff{ACCESS}:{SECRET}\n".encode(), (ACCESS, SECRET), id="utf8-byte-order-mark"
        ),
    ],
)
def test_parse_passwd_file(tmp_path: Path, text: str | bytes, expected: tuple[str, str]) -> None:
    path = write(tmp_path / "passwd", text)
    assert parse_passwd_file(path, BUCKET) == expected


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            f"{ACCESS}:{SECRET[:5]} {SECRET[5:]}\n",
            ["invalid line 1 in", "whitespace is not allowed"],
            id="space",
        ),
        pytest.param(
            f"# comment\n\n{ACCESS}:\t{SECRET}\n",
            ["invalid line 3 in", "whitespace is not allowed"],
            id="tab-line-number",
        ),
        pytest.param(
            f"[default]\naws_access_key_id={ACCESS}\naws_secret_access_key={SECRET}\n",
            ["invalid line 1 in", "found a bracket '['", "use -o profile= instead"],
            id="aws-credentials-file",
        ),
        pytest.param(
            f"other:{ACCESS}:{SECRET}\n",
            [f"no access key for bucket {BUCKET} in"],
            id="only-another-bucket",
        ),
        pytest.param("# nothing here\n", [f"no access key for bucket {BUCKET} in"], id="empty"),
        pytest.param(
            f"{BUCKET}:A1:{SECRET}\n{BUCKET}:A2:{SECRET}2\n",
            [f"has several entries for bucket {BUCKET}"],
            id="duplicate-bucket",
        ),
        pytest.param(
            f"other:A1:{SECRET}\nother:A2:{SECRET}2\n{ACCESS}:{SECRET}\n",
            ["has several entries for bucket other"],
            id="duplicate-other-bucket",
        ),
        pytest.param(
            f"A1:{SECRET}\n:A2:{SECRET}2\n", ["has several default entries"], id="duplicate-default"
        ),
        pytest.param(f"{ACCESS}:\n", ["invalid line 1 in", "empty secret key"], id="no-secret"),
        pytest.param(
            f"{BUCKET}:{ACCESS}:\n",
            ["invalid line 1 in", "empty secret key"],
            id="bucket-no-secret",
        ),
        pytest.param(f":{SECRET}\n", ["invalid line 1 in", "empty access key"], id="no-access"),
        pytest.param(
            f"{BUCKET}::{SECRET}\n",
            ["invalid line 1 in", "empty access key"],
            id="bucket-no-access",
        ),
        pytest.param(f"{SECRET}\n", ["invalid line 1 in", "expected ACCESS:SECRET"], id="no-colon"),
        pytest.param(
            f"aws_secret_access_key={SECRET}\n",
            ["invalid line 1 in", "expected ACCESS:SECRET"],
            id="unknown-key",
        ),
        pytest.param(
            f"AWSAccessKeyId={ACCESS}\n",
            ["has AWSAccessKeyId but no AWSSecretKey"],
            id="kv-no-secret",
        ),
        pytest.param(
            f"AWSSecretKey={SECRET}\n{BUCKET}:{ACCESS}:{SECRET}\n",
            ["has AWSSecretKey but no AWSAccessKeyId"],
            id="kv-no-access",
        ),
        pytest.param(
            f"AWSAccessKeyId={ACCESS}\nAWSSecretKey=\n",
            ["invalid line 2 in", "empty secret key"],
            id="kv-empty-secret",
        ),
        pytest.param(
            f"AWSSecretKey={SECRET}\nAWSSecretKey={SECRET}2\nAWSAccessKeyId={ACCESS}\n",
            ["has several AWSSecretKey lines"],
            id="kv-duplicate",
        ),
        pytest.param(
            b"# caf\xe9\n" + f"{ACCESS}:{SECRET}\n".encode(), ["is not UTF-8 text"], id="not-utf8"
        ),
    ],
)
def test_parse_passwd_file_errors(tmp_path: Path, text: str | bytes, fragments: list[str]) -> None:
    path = write(tmp_path / "passwd", text)
    with pytest.raises(CredentialsError) as exc:
        parse_passwd_file(path, BUCKET)
    assert_safe_message(exc, path, *fragments)
    assert isinstance(exc.value, S3mountError)
    assert exc.value.exit_code == 1


# --- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "system", "fragments"),
    [
        (0o600, False, None),
        (0o400, False, None),
        (0o600, True, None),
        (0o640, True, None),
        (0o440, True, None),
        (0o644, False, ["is readable or writable by others (mode 0644)", "run: chmod 600"]),
        (0o604, False, ["is readable or writable by others (mode 0604)", "run: chmod 600"]),
        (0o602, False, ["is readable or writable by others (mode 0602)", "run: chmod 600"]),
        (0o601, False, ["is executable by others (mode 0601)", "run: chmod 600"]),
        (0o644, True, ["is readable or writable by others (mode 0644)", "run: chmod 640"]),
        (0o640, False, ["has group permissions (mode 0640)", "run: chmod 600"]),
        (0o620, False, ["has group permissions (mode 0620)", "run: chmod 600"]),
        (0o740, False, ["has group permissions (mode 0740)", "run: chmod 600"]),
        (0o660, True, ["is group-writable (mode 0660)", "run: chmod 640"]),
        (0o700, False, ["is executable (mode 0700)", "run: chmod 600"]),
        (0o700, True, ["is executable (mode 0700)", "run: chmod 640"]),
        (0o740, True, ["is executable (mode 0740)", "run: chmod 640"]),
        (0o650, True, ["is executable (mode 0650)", "run: chmod 640"]),
    ],
)
def test_check_passwd_file_permissions(
    tmp_path: Path, mode: int, system: bool, fragments: list[str] | None
) -> None:
    path = write(tmp_path / "passwd-s3fs", f"{ACCESS}:{SECRET}\n", mode)
    system_files = [path] if system else [str(tmp_path / "elsewhere")]
    if fragments is None:
        check_passwd_file_permissions(path, system_passwd_files=system_files)
        return
    with pytest.raises(CredentialsError) as exc:
        check_passwd_file_permissions(path, system_passwd_files=system_files)
    message = assert_safe_message(exc, f"credentials file {path} ", *fragments)
    assert message.endswith(f" {path}")  # the suggested chmod names the file


def test_system_file_matched_by_normalised_path(tmp_path: Path) -> None:
    path = write(tmp_path / "passwd-s3fs", f"{ACCESS}:{SECRET}\n", 0o640)
    check_passwd_file_permissions(str(tmp_path / "." / "passwd-s3fs"), system_passwd_files=[path])


def test_directory_is_not_readable(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.mkdir(mode=0o700)
    for call in (
        lambda: check_passwd_file_permissions(str(path)),
        lambda: parse_passwd_file(str(path), BUCKET),
    ):
        with pytest.raises(CredentialsError) as exc:
            call()
        assert_safe_message(exc, f"credentials file {path} is not readable by this user")


def test_permission_denied_is_not_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which chmod 000 does not stop, so the refusal is simulated.
    def denied(path: str, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(credentials, "open", denied, raising=False)
    with pytest.raises(CredentialsError) as exc:
        check_passwd_file_permissions(str(tmp_path / "passwd"))
    assert_safe_message(exc, f"credentials file {tmp_path / 'passwd'} is not readable by this user")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing")
    with pytest.raises(CredentialsError) as exc:
        check_passwd_file_permissions(path)
    assert_safe_message(exc, f"credentials file {path} does not exist")


# --- lookup order ---------------------------------------------------------------------------

SOURCES = [
    "option",
    "env",
    "AWS_CREDENTIAL_FILE",
    "profile",
    "~/.passwd-s3mount",
    "~/.passwd-s3fs",
    "/etc/passwd-s3mount",
    "/etc/passwd-s3fs",
]


def install(
    machine: Machine, source: str, key: str, env: dict[str, str], kwargs: dict[str, Any]
) -> str:
    """Make `source` available with access key `key`; return the expected source text."""
    line = f"{key}:{SECRET}\n"
    if source == "option":
        kwargs["passwd_file"] = path = write(machine.root / "option-passwd", line)
        return f"passwd file {path}"
    if source == "env":
        env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=SECRET)
        return "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if source == "AWS_CREDENTIAL_FILE":
        env["AWS_CREDENTIAL_FILE"] = path = write(machine.root / "aws-credential-file", line)
        return f"AWS_CREDENTIAL_FILE {path}"
    if source == "profile":
        text = f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {SECRET}\n"
        write(machine.aws_credentials, text, 0o644)
        return f"profile 'default' in {machine.aws_credentials}"
    targets = {
        "~/.passwd-s3mount": machine.home / ".passwd-s3mount",
        "~/.passwd-s3fs": machine.home / ".passwd-s3fs",
        "/etc/passwd-s3mount": machine.etc_s3mount,
        "/etc/passwd-s3fs": machine.etc_s3fs,
    }
    # 0640 is only accepted for the system files.
    mode = 0o640 if source.startswith("/etc") else 0o600
    return f"passwd file {write(targets[source], line, mode)}"


@pytest.mark.parametrize("winner", range(len(SOURCES) + 1), ids=[*SOURCES, "none"])
def test_lookup_order(machine: Machine, winner: int) -> None:
    env: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    expected = [
        (install(machine, source, f"AK{i}", env, kwargs), f"AK{i}")
        for i, source in enumerate(SOURCES)
        if i >= winner
    ]
    creds = machine.resolve(env, **kwargs)
    if winner == len(SOURCES):
        assert creds is None
        return
    assert creds is not None
    assert (creds.source, creds.access_key) == expected[0]
    assert creds.secret_key == SECRET
    assert creds.session_token is None


def test_default_passwd_files_constant() -> None:
    assert DEFAULT_PASSWD_FILES == (
        "~/.passwd-s3mount",
        "~/.passwd-s3fs",
        "/etc/passwd-s3mount",
        "/etc/passwd-s3fs",
    )


def test_home_defaults_to_environment_then_password_database(tmp_path: Path) -> None:
    write(tmp_path / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    creds = resolve_credentials(BUCKET, environ={"HOME": str(tmp_path)}, system_passwd_files=[])
    assert creds is not None
    assert creds.source == f"passwd file {tmp_path / '.passwd-s3fs'}"

    pw_home = pwd.getpwuid(os.getuid()).pw_dir
    with pytest.raises(CredentialsError) as exc:
        resolve_credentials(BUCKET, passwd_file="~/no-such-s3mount-test-file", environ={})
    assert_safe_message(exc, f"{os.path.join(pw_home, 'no-such-s3mount-test-file')} does not exist")


def test_passwd_file_option_expands_tilde(machine: Machine) -> None:
    write(machine.home / "keys", f"{ACCESS}:{SECRET}\n")
    creds = machine.resolve(passwd_file="~/keys")
    assert creds == Credentials(ACCESS, SECRET, None, f"passwd file {machine.home / 'keys'}")


@pytest.mark.parametrize("via", ["option", "AWS_CREDENTIAL_FILE"])
@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "does not exist"),
        ("directory", "is not readable by this user"),
        ("insecure", "is readable or writable by others"),
        ("malformed", "whitespace is not allowed"),
    ],
)
def test_explicit_passwd_file_errors_do_not_fall_through(
    machine: Machine, via: str, setup: str, fragment: str
) -> None:
    path = machine.root / "passwd"
    if setup == "directory":
        path.mkdir()
    elif setup == "insecure":
        write(path, f"{ACCESS}:{SECRET}\n", 0o644)
    elif setup == "malformed":
        write(path, f"{ACCESS}: {SECRET}\n")
    write(machine.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    if via == "option":
        # The option beats the environment, so keys there must not rescue a bad file.
        env = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
        kwargs = {"passwd_file": str(path)}
    else:
        env, kwargs = {"AWS_CREDENTIAL_FILE": str(path)}, {}
    with pytest.raises(CredentialsError) as exc:
        machine.resolve(env, **kwargs)
    assert_safe_message(exc, str(path), fragment)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("insecure", "has group permissions (mode 0640)"),
        ("malformed", "invalid line 1"),
        ("other-bucket", f"no access key for bucket {BUCKET}"),
        ("directory", "is not readable by this user"),
        ("dangling-symlink", "does not exist"),
    ],
)
def test_bad_default_passwd_file_is_not_skipped(
    machine: Machine, setup: str, fragment: str
) -> None:
    first = machine.home / ".passwd-s3mount"
    if setup == "insecure":
        write(first, f"{ACCESS}:{SECRET}\n", 0o640)
    elif setup == "malformed":
        write(first, f"[default]\n{ACCESS}:{SECRET}\n")
    elif setup == "other-bucket":
        write(first, f"other:{ACCESS}:{SECRET}\n")
    elif setup == "directory":
        first.mkdir()
    else:
        first.symlink_to(machine.root / "nowhere")
    write(machine.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    with pytest.raises(CredentialsError) as exc:
        machine.resolve()
    assert_safe_message(exc, str(first), fragment)


def test_system_passwd_file_rules_follow_the_configured_list(machine: Machine) -> None:
    # The same 0640 file is fine as a system file and refused as a user file.
    path = write(machine.etc_s3fs, f"{ACCESS}:{SECRET}\n", 0o640)
    creds = machine.resolve()
    assert creds is not None
    assert creds.source == f"passwd file {path}"
    with pytest.raises(CredentialsError) as exc:
        resolve_credentials(
            BUCKET, passwd_file=path, environ={}, home=str(machine.home), system_passwd_files=[]
        )
    assert_safe_message(exc, "has group permissions (mode 0640)")


# --- environment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET},
            Credentials(
                ACCESS,
                SECRET,
                None,
                "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ),
            id="new-names",
        ),
        pytest.param(
            {
                "AWS_ACCESS_KEY_ID": ACCESS,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_SESSION_TOKEN": TOKEN,
            },
            Credentials(
                ACCESS,
                SECRET,
                TOKEN,
                "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ),
            id="new-names-with-token",
        ),
        pytest.param(
            {"AWSACCESSKEYID": ACCESS, "AWSSECRETACCESSKEY": SECRET, "AWSSESSIONTOKEN": TOKEN},
            Credentials(
                ACCESS, SECRET, TOKEN, "environment variables AWSACCESSKEYID/AWSSECRETACCESSKEY"
            ),
            id="old-names",
        ),
        pytest.param(
            {
                "AWS_ACCESS_KEY_ID": ACCESS,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_SESSION_TOKEN": TOKEN,
                "AWSACCESSKEYID": "OLD",
                "AWSSECRETACCESSKEY": "OLDSECRET",
                "AWSSESSIONTOKEN": "OLDTOKEN",
            },
            Credentials(
                ACCESS,
                SECRET,
                TOKEN,
                "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            ),
            id="new-names-win",
        ),
        pytest.param(
            {
                "AWS_ACCESS_KEY_ID": "",
                "AWSACCESSKEYID": ACCESS,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_SESSION_TOKEN": "",
            },
            Credentials(
                ACCESS, SECRET, None, "environment variables AWSACCESSKEYID/AWS_SECRET_ACCESS_KEY"
            ),
            id="empty-is-unset",
        ),
        pytest.param({"AWS_SESSION_TOKEN": TOKEN}, None, id="token-alone-is-ignored"),
        pytest.param({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, None, id="all-empty"),
    ],
)
def test_environment(machine: Machine, env: dict[str, str], expected: Credentials | None) -> None:
    assert machine.resolve(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_ACCESS_KEY_ID": ACCESS},
        {"AWS_SECRET_ACCESS_KEY": SECRET},
        {"AWSSECRETACCESSKEY": SECRET, "AWS_SESSION_TOKEN": TOKEN},
        {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": ""},
    ],
)
def test_environment_half_set(machine: Machine, env: dict[str, str]) -> None:
    write(machine.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    with pytest.raises(CredentialsError) as exc:
        machine.resolve(env)
    assert_safe_message(
        exc,
        "both environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        " must be set together",
    )


def test_use_session_token(machine: Machine) -> None:
    env = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    with pytest.raises(CredentialsError) as exc:
        machine.resolve(env, use_session_token=True)
    assert_safe_message(exc, "use_session_token is set but AWS_SESSION_TOKEN is not set")

    creds = machine.resolve({**env, "AWSSESSIONTOKEN": TOKEN}, use_session_token=True)
    assert creds is not None
    assert creds.session_token == TOKEN


# --- AWS shared credentials file ------------------------------------------------------------

PROFILES = f"""\
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = {SECRET}

[dev]
AWS_Access_Key_ID = DEVKEY
aws_secret_access_key = {SECRET}%x
aws_session_token = {TOKEN}

[prod]
aws_access_key_id = PRODKEY
aws_secret_access_key = {SECRET}
"""


@pytest.mark.parametrize(
    ("profile", "env", "section", "access", "secret", "token"),
    [
        (None, {}, "default", "DEFAULTKEY", SECRET, None),
        # No interpolation: '%' in a secret is kept as written.
        ("dev", {}, "dev", "DEVKEY", f"{SECRET}%x", TOKEN),
        (None, {"AWS_PROFILE": "dev"}, "dev", "DEVKEY", f"{SECRET}%x", TOKEN),
        ("prod", {"AWS_PROFILE": "dev"}, "prod", "PRODKEY", SECRET, None),
        ("", {"AWS_PROFILE": "prod"}, "prod", "PRODKEY", SECRET, None),
    ],
)
def test_profile_selection(
    machine: Machine,
    profile: str | None,
    env: dict[str, str],
    section: str,
    access: str,
    secret: str,
    token: str | None,
) -> None:
    write(machine.aws_credentials, PROFILES)
    creds = machine.resolve(env, profile=profile)
    source = f"profile '{section}' in {machine.aws_credentials}"
    assert creds == Credentials(access, secret, token, source)


def test_shared_credentials_file_variable(machine: Machine) -> None:
    write(machine.aws_credentials, PROFILES)
    other = write(
        machine.root / "elsewhere",
        f"[default]\naws_access_key_id = ELSEWHERE\naws_secret_access_key = {SECRET}\n",
    )
    creds = machine.resolve({"AWS_SHARED_CREDENTIALS_FILE": other})
    assert creds is not None
    assert creds.access_key == "ELSEWHERE"
    assert creds.source == f"profile 'default' in {other}"

    creds = machine.resolve({"AWS_SHARED_CREDENTIALS_FILE": "~/.aws/credentials"}, profile="prod")
    assert creds is not None
    assert creds.access_key == "PRODKEY"


@pytest.mark.parametrize("how", ["option", "AWS_PROFILE"])
@pytest.mark.parametrize(
    "content",
    [
        None,
        f"[default]\naws_access_key_id = A\naws_secret_access_key = {SECRET}\n",
        "[staging]\nregion = eu-west-1\n",
    ],
    ids=["no-file", "no-section", "no-keys"],
)
def test_named_profile_missing_is_an_error(machine: Machine, how: str, content: str | None) -> None:
    if content is not None:
        write(machine.aws_credentials, content)
    # Even with other sources available: who names a profile wants that one.
    write(machine.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    with pytest.raises(CredentialsError) as exc:
        if how == "option":
            machine.resolve(profile="staging")
        else:
            machine.resolve({"AWS_PROFILE": "staging"})
    assert_safe_message(exc, f"profile 'staging' not found in {machine.aws_credentials}")


@pytest.mark.parametrize(
    "content",
    [None, f"[dev]\naws_access_key_id = A\naws_secret_access_key = {SECRET}\n", "[default]\n"],
    ids=["no-file", "no-default-section", "no-keys"],
)
def test_default_profile_missing_falls_through(machine: Machine, content: str | None) -> None:
    if content is not None:
        write(machine.aws_credentials, content)
    assert machine.resolve() is None
    path = write(machine.home / ".passwd-s3fs", f"{ACCESS}:{SECRET}\n")
    creds = machine.resolve()
    assert creds is not None
    assert creds.source == f"passwd file {path}"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (
            "[default]\naws_access_key_id = A\n",
            ["profile 'default' in", "has aws_access_key_id but no aws_secret_access_key"],
        ),
        (
            f"[default]\naws_secret_access_key = {SECRET}\n",
            ["profile 'default' in", "has aws_secret_access_key but no aws_access_key_id"],
        ),
        (
            f"[default]\naws_access_key_id = A\n{SECRET}\n",
            ["cannot parse AWS credentials file", "(line 3)"],
        ),
        (f"aws_secret_access_key = {SECRET}\n", ["cannot parse AWS credentials file", "(line 1)"]),
        (
            f"[default]\naws_secret_access_key = {SECRET}\naws_secret_access_key = {SECRET}\n",
            ["cannot parse AWS credentials file", "(line 3)"],
        ),
        (b"[default]\naws_access_key_id = \xff\n", ["AWS credentials file", "is not UTF-8 text"]),
    ],
    ids=["no-secret", "no-access", "junk-line", "no-section-header", "duplicate-key", "not-utf8"],
)
def test_broken_shared_credentials_file(
    machine: Machine, content: str | bytes, fragments: list[str]
) -> None:
    write(machine.aws_credentials, content)
    with pytest.raises(CredentialsError) as exc:
        machine.resolve()
    assert_safe_message(exc, str(machine.aws_credentials), *fragments)


def test_unreadable_shared_credentials_file(machine: Machine) -> None:
    machine.aws_credentials.mkdir(parents=True)
    with pytest.raises(CredentialsError) as exc:
        machine.resolve()
    assert_safe_message(
        exc, f"AWS credentials file {machine.aws_credentials} is not readable by this user"
    )


def test_use_session_token_with_profile(machine: Machine) -> None:
    write(machine.aws_credentials, PROFILES)
    creds = machine.resolve(profile="dev", use_session_token=True)
    assert creds is not None
    assert creds.session_token == TOKEN
    with pytest.raises(CredentialsError) as exc:
        machine.resolve(profile="prod", use_session_token=True)
    assert_safe_message(exc, "use_session_token is set but profile 'prod'", "aws_session_token")


# --- secrets stay out of output -------------------------------------------------------------


def test_repr_hides_secret_and_token() -> None:
    creds = Credentials(ACCESS, SECRET, TOKEN, "environment variables")
    for text in (repr(creds), str(creds)):
        assert ACCESS in text
        assert SECRET not in text
        assert TOKEN not in text
