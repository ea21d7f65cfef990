#!/usr/bin/env bash
# s3mount demo (`make demo`): start a local S3 server (moto) on a free loopback port,
# fill a bucket with objects in s3fs's format, mount it, look around, then unmount and
# stop the server. Whatever happens, the trap unmounts, stops the server it started
# and removes the temporary directory.
#
#   VENV=.venv bash scripts/demo.sh      (the venv must hold s3mount and its test extras)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
S3MOUNT=$VENV/bin/s3mount
BUCKET=s3mount-demo
ACCESS_KEY=AKIADEMODEMODEMO0000
SECRET_KEY=demo/secret/0123456789abcdefghijklmnopq

WORK=""
MNT=""
SERVER_PID=""
DAEMON_PID=""

heading() { printf '\n=== %s ===\n' "$*"; }
# Show a command (quoting only the words that need it), then run it.
run() {
    local word line="$"
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            line+=" $word"
        else
            line+=" '${word//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$line"
    "$@"
}
die() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }
check() {
    local what=$1
    shift
    if "$@"; then printf '  ok: %s\n' "$what"; else die "$what"; fi
}

# True while process $1 exists and has not exited (a zombie counts as exited).
alive() {
    local state
    state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Wait up to $2 seconds for process $1 to exit.
wait_exit() {
    local pid=$1 tenths=$(($2 * 10))
    while alive "$pid" && [ "$tenths" -gt 0 ]; do
        sleep 0.1
        tenths=$((tenths - 1))
    done
    ! alive "$pid"
}

is_mounted() {
    [ -n "$MNT" ] && awk -v m="$MNT" '$2 == m {found = 1} END {exit !found}' /proc/mounts
}

# The detached s3mount daemon: the process whose command line names our mount point.
find_daemon() {
    local dir cmdline
    for dir in /proc/[0-9]*; do
        cmdline=$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null) || continue
        case $cmdline in
            *s3mount*" $MNT "*) echo "${dir#/proc/}"; return 0 ;;
        esac
    done
    return 0
}

stop_daemon() {
    [ -n "$DAEMON_PID" ] || return 0
    if ! wait_exit "$DAEMON_PID" 10; then
        echo "demo: the s3mount daemon (pid $DAEMON_PID) did not exit; killing it" >&2
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    DAEMON_PID=""
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    if ! wait_exit "$SERVER_PID" 10; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if is_mounted; then
        fusermount -u "$MNT" 2>/dev/null || fusermount -u -z "$MNT" || true
    fi
    stop_daemon
    stop_server
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if is_mounted; then
            echo "demo: $MNT is still mounted; leaving $WORK in place" >&2
        else
            cd /
            rm -rf "$WORK"
        fi
    fi
    if [ "$status" -ne 0 ]; then
        echo "demo: failed (exit status $status)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -x "$S3MOUNT" ] || die "$S3MOUNT is missing: run 'make demo' (or 'make venv') first"
command -v fusermount >/dev/null || die "fusermount is missing: apt-get install fuse"
[ -e /dev/fuse ] || die "/dev/fuse is missing (in a container: --device /dev/fuse --cap-add SYS_ADMIN)"

# Never let botocore look for instance metadata credentials.
export AWS_EC2_METADATA_DISABLED=true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-demo.XXXXXX")
MNT=$WORK/mnt
PASSWD=$WORK/passwd-s3mount
mkdir "$MNT"
cd "$WORK"

heading "Starting a local S3 server (moto) on loopback"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
printf '$ %s -m moto.server -H 127.0.0.1 -p %s >moto.log 2>&1 &\n' "$PY" "$PORT"
"$PY" -m moto.server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 </dev/null &
SERVER_PID=$!
for _ in $(seq 300); do
    alive "$SERVER_PID" || { cat "$WORK/moto.log" >&2; die "the moto server exited"; }
    if (: <>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done
(: <>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "the moto server did not start listening on $URL"
alive "$SERVER_PID" || die "the moto server exited"
echo "moto server (pid $SERVER_PID) listening on $URL"

heading "Writing a passwd file (mode 0600)"
umask 077
printf '%s:%s\n' "$ACCESS_KEY" "$SECRET_KEY" >"$PASSWD"
umask 022
chmod 600 "$PASSWD"
run ls -l passwd-s3mount

heading "Creating bucket '$BUCKET' with objects in s3fs's format"
run "$PY" "$ROOT/scripts/seed_demo_bucket.py" --url "$URL" --bucket "$BUCKET" \
    --passwd-file "$PASSWD"

heading "Mounting (daemon mode: returns once the mount is usable)"
run "$S3MOUNT" "$BUCKET" "$MNT" -o "url=$URL,passwd_file=$PASSWD"
is_mounted || die "$MNT is not mounted"
DAEMON_PID=$(find_daemon)
echo "s3mount daemon pid: ${DAEMON_PID:-unknown}"
run findmnt "$MNT"

heading "Listing"
run ls -l mnt
run ls -la mnt/dir
run ls -lR mnt/photos

heading "Attributes from x-amz-meta-* headers"
run stat mnt/README.txt
run stat mnt/dir

heading "Reading"
run cat mnt/README.txt
run cat mnt/dir/run.sh
run od -A d -t x1 -N 4 mnt/photos/2024/b.jpg

heading "Symbolic links"
run ls -l mnt/latest
run readlink mnt/latest
run cat mnt/latest

heading "The whole tree"
run find mnt -printf '%M %4U %4G %8s %TY-%Tm-%Td %p\n'

heading "Capacity"
run df -h "$MNT"

heading "Checks"
check "README.txt is -rw-r--r-- 1000:1000" \
    test "$(stat -c '%A %u:%g' mnt/README.txt)" = "-rw-r--r-- 1000:1000"
check "README.txt has the mtime of its x-amz-meta-mtime header" \
    test "$(stat -c %Y mnt/README.txt)" = 1709294400
check "README.txt reads back" grep -q '^Hello from s3mount!$' mnt/README.txt
check "dir is a directory with mode 0750" test "$(stat -c '%F %a' mnt/dir)" = "directory 750"
check "dir/run.sh is executable" test -x mnt/dir/run.sh
check "latest is a symbolic link to README.txt" test "$(readlink mnt/latest)" = README.txt
check "photos/2024 is an implicit directory" test -d mnt/photos/2024
check "archive (an old-style _\$folder\$ directory) is a directory" test -d mnt/archive
check "find sees all 12 entries" test "$(find mnt | wc -l)" -eq 12

heading "Unmounting"
run fusermount -u "$MNT"
is_mounted && die "$MNT is still mounted"
stop_daemon
echo "unmounted; the s3mount daemon has exited"

heading "Stopping the S3 server"
echo "stopping the moto server (pid $SERVER_PID)"
stop_server

heading "Demo finished"
