"""`layerfs run` and the container life cycle, as root and rootless, on real namespaces.

Every test runs the real CLI on a busybox image (support.runnable) and looks from
inside the container (its /proc, its ids, its terminal) and from outside (exit
codes, `ps`, `diff`, the host's mount table and process list). After each test
nothing of the container may be left: no mount, no process, hence no namespace.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fcntl
import pytest
import termios

from conftest import LAYERFS_BIN, Layerfs, fuse_mounts_under
from support.oci import directory, file, make_layer, symlink, whiteout, write_oci_layout
from support.runnable import GROUP, PASSWD, ROOT_PASSWORD, runnable_layer

BOX = "box:1"
APP = "app:1"
DEFAULT_CAPS = "00000000a80425fb"  # docker's default capability set
APP_CONFIG = {
    "Entrypoint": ["/bin/echo", "entry"], "Cmd": ["from-cmd"], "Env": ["FOO=bar"],
    "User": "app", "WorkingDir": "/srv/app", "StopSignal": "SIGUSR1",
    "Volumes": {"/cache": {}}, "ExposedPorts": {"8080/tcp": {}},
}


def import_image(lfs: Layerfs, name: str, config: dict) -> None:
    source = lfs.workdir / f"src-{uuid.uuid4().hex[:8]}"
    write_oci_layout(source, [runnable_layer()], config=config)
    lfs.give(source)
    lfs.run("import", f"oci:{source}", name, "-q")


def processes_of(lfs: Layerfs) -> list[str]:
    """Live processes started for this store: its launchers and mount daemons (their
    command lines name the store), the containers' init and everything below them."""
    found, parents = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] not in (b"Z", b"X"):
            found[int(entry)] = cmdline
            parents[int(entry)] = int(stat[1])
    ours = {pid for pid, cmdline in found.items() if str(lfs.root) in cmdline and pid != os.getpid()}
    changed = True
    while changed:
        below = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= below
        changed = bool(below)
    return [found[pid] for pid in ours]


def assert_nothing_left(lfs: Layerfs) -> None:
    deadline = time.monotonic() + 10
    while (processes_of(lfs) or fuse_mounts_under(lfs.workdir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuse_mounts_under(lfs.workdir) == []
    assert processes_of(lfs) == []


@pytest.fixture
def box(lfs: Layerfs) -> Iterator[Layerfs]:
    """The test identity with the runnable image imported as box:1 and as app:1 (a
    config that sets everything); nothing may be left running or mounted after a test."""
    import_image(lfs, BOX, {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})
    import_image(lfs, APP, APP_CONFIG)
    yield lfs
    for container in json.loads(lfs.run("ps", "-a", "--json").stdout):
        lfs.run("rm", "-f", container["id"], check=False)
    assert_nothing_left(lfs)


def run(lfs: Layerfs, *args: str, image: str = BOX, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return lfs.run("run", "--rm", *options, image, *args, check=False, timeout=60)


def out(lfs: Layerfs, *args: str, **kwargs: object) -> str:
    proc = run(lfs, *args, **kwargs)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def as_identity(lfs: Layerfs, argv: list[str]) -> list[str]:
    """The command itself as this identity (setpriv execs: the pid is layerfs's, so a
    signal sent to it reaches layerfs, not a runuser in between)."""
    if not lfs.rootless:
        return argv
    return ["setpriv", f"--reuid={lfs.user}", f"--regid={lfs.user}", "--init-groups", "--", *argv]


def spawn(lfs: Layerfs, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(as_identity(lfs, [LAYERFS_BIN, "--root", str(lfs.root), *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lfs.env(), cwd=lfs.workdir)


def state_of(lfs: Layerfs, name: str) -> dict:
    return next(c for c in json.loads(lfs.run("ps", "-a", "--json").stdout) if c["name"] == name)


def wait_for(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# isolation
# ---------------------------------------------------------------------------------------

def test_pid_1_is_the_init_and_the_command_is_pid_2(box: Layerfs) -> None:
    text = out(box, "sh", "-c", "echo $$; cat /proc/1/comm; echo /proc/[0-9]*")
    assert text.split() == ["2", "layerfs-init", "/proc/1", "/proc/2"], "only init and the shell in its pid namespace"


def test_hostname_is_the_short_id_or_the_one_given(box: Layerfs) -> None:
    box.run("create", "--name", "named", BOX, "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME")
    short = state_of(box, "named")["id"][:12]
    assert box.run("start", "-a", "named").stdout.split() == [short] * 3
    assert out(box, "hostname", options=("--hostname", "web")).strip() == "web"
    assert box.run("diff", "named").stdout == "", "the runtime's /etc/hostname is not the layer's"


def test_host_files_are_not_visible(box: Layerfs) -> None:
    marker = box.workdir / "host-only"
    marker.write_text("host\n")
    assert run(box, "cat", str(marker)).returncode == 1
    assert out(box, "ls", "/").split() == sorted(
        ["bin", "dev", "etc", "home", "proc", "root", "srv", "sys", "tmp", "usr", "var"])


def test_uid_0_inside_is_the_user_outside(box: Layerfs) -> None:
    """Rootless: 0 inside maps to the user, 1.. to its subordinate ids; a file root makes
    inside belongs to the user in the layer. Root runs without a user namespace."""
    mapping = out(box, "cat", "/proc/self/uid_map").split()
    assert out(box, "id", "-u").strip() == "0"
    if box.rootless:
        assert mapping[:3] == ["0", str(_uid(box)), "1"]
        assert len(mapping) == 6, "the subordinate range is mapped too"
    else:
        assert mapping == ["0", "0", "4294967295"]
    box.run("create", "--name", "owner", BOX, "sh", "-c", "touch /root/made && chown other /home/app")
    box.run("start", "-a", "owner")
    assert box.run("diff", "owner").stdout.split() == ["C", "/home/app", "A", "/root/made"]


def test_userns_single_maps_only_the_user(box: Layerfs) -> None:
    if not box.rootless:
        pytest.skip("root on the host runs without a user namespace")
    text = out(box, "sh", "-c", "cat /proc/self/uid_map; id -u; touch /tmp/x && stat -c %u /tmp/x",
               options=("--userns", "single"))
    assert text.split() == ["0", str(_uid(box)), "1", "0", "0"]


def _uid(lfs: Layerfs) -> int:
    import pwd
    return pwd.getpwnam(lfs.user).pw_uid


def test_capabilities_are_dockers_defaults(box: Layerfs) -> None:
    status = dict(line.split(":\t") for line in out(box, "cat", "/proc/self/status").splitlines() if ":\t" in line)
    # real root (no user namespace, no device cgroup) goes without CAP_MKNOD
    expected = DEFAULT_CAPS if box.rootless else f"{int(DEFAULT_CAPS, 16) & ~(1 << 27):016x}"
    assert status["CapBnd"].strip() == expected
    assert status["CapEff"].strip() == expected
    assert status["NoNewPrivs"].strip() == "0"
    user = dict(line.split(":\t") for line in out(box, "cat", "/proc/self/status", options=("-u", "app"))
                .splitlines() if ":\t" in line)
    assert user["CapEff"].strip() == "0" * 16, "a user other than root has none"


def test_su_works_inside_and_no_new_privileges_stops_it(box: Layerfs) -> None:
    """setuid works in the container's namespace (runtime mounts are suid there): a user
    becomes root with root's password; root becomes any user without."""
    su_to_root = ("sh", "-c", f"echo {ROOT_PASSWORD} | su -c 'id -u' root")
    assert out(box, *su_to_root, options=("-u", "app")).split()[-1] == "0"
    assert out(box, "su", "-s", "/bin/sh", "-c", "id -un", "app").strip() == "app"
    refused = run(box, *su_to_root, options=("-u", "app", "--security-opt", "no-new-privileges"))
    assert refused.returncode != 0 and "must be suid" in refused.stderr
    assert out(box, "grep", "NoNewPrivs", "/proc/self/status",
               options=("--security-opt", "no-new-privileges")).split() == ["NoNewPrivs:", "1"]


def test_many_users_share_the_container(box: Layerfs) -> None:
    """Each user of the image gets the kernel's permission checks on the runtime mount."""
    script = ("su -s /bin/sh -c 'echo mine > /home/app/f; cat /root/secret' app; echo status $?;"
              "su -s /bin/sh -c 'cat /home/app/f; echo x > /home/app/g' other; echo status $?;"
              "ls -ln /home/app/f")
    text = out(box, "sh", "-c", script)
    assert "root only" not in text
    assert text.count("status 1") == 2
    assert "mine" in text and " 1000 " in text.splitlines()[-1]


# ---------------------------------------------------------------------------------------
# exit codes
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, code, says", [
    (["sh", "-c", "exit 7"], 7, None),
    (["no-such-command"], 127, "no-such-command: executable file not found"),
    (["/bin/not-executable"], 126, "cannot run /bin/not-executable: Permission denied"),
    (["sh", "-c", "kill -9 $$"], 137, None),
    (["sh", "-c", "kill -TERM $$"], 143, None),
], ids=["own", "not-found", "not-executable", "sigkill", "sigterm"])
def test_exit_codes(box: Layerfs, command: list[str], code: int, says: str | None) -> None:
    proc = run(box, *command)
    assert proc.returncode == code, proc.stderr
    if says:
        assert proc.stderr.splitlines() == [f"layerfs: error: {says}" + proc.stderr.split(says, 1)[1].rstrip()]


@pytest.mark.parametrize("args", [
    ["run", "--rm", "no-such-image:1", "true"],
    ["run", "--rm", "-u", "nobody-here", BOX, "true"],
    ["run", "--rm", "--bogus", BOX],
    ["run"],
    ["run", "--rm", "-v", "relative:path", BOX, "true"],
    ["run", "--rm", "-v", "/no/such/dir:/x", BOX, "true"],
    ["exec", "no-such-container", "true"],
], ids=["unknown-image", "unknown-user", "unknown-option", "no-image", "bad-volume", "missing-bind", "exec-unknown"])
def test_launcher_errors_exit_125_in_one_line(box: Layerfs, args: list[str]) -> None:
    proc = box.run(*args, check=False)
    assert proc.returncode == 125, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("layerfs: error: ")
    assert "Traceback" not in proc.stderr


def test_a_name_in_use_is_refused(box: Layerfs) -> None:
    box.run("create", "--name", "taken", BOX)
    proc = box.run("run", "--name", "taken", BOX, "true", check=False)
    assert proc.returncode == 125 and "already used" in proc.stderr


# ---------------------------------------------------------------------------------------
# the image's config
# ---------------------------------------------------------------------------------------

def test_entrypoint_cmd_user_workdir_env_from_the_image(box: Layerfs) -> None:
    assert out(box, image=APP) == "entry from-cmd\n"
    assert out(box, "given", image=APP) == "entry given\n", "arguments replace Cmd, not the Entrypoint"
    env = out(box, image=APP, options=("--entrypoint", "env")).splitlines()
    assert "FOO=bar" in env and "HOME=/home/app" in env
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env, "docker's default PATH"
    assert out(box, "-c", "id -un; pwd", image=APP, options=("--entrypoint", "sh")).split() == ["app", "/srv/app"]
    assert out(box, "-c", "id -un; pwd", image=APP,
               options=("--entrypoint", "sh", "-u", "other", "-w", "/tmp/new", "-e", "FOO=given")).split() \
        == ["other", "/tmp/new"]
    assert out(box, "-c", "echo $FOO", image=APP, options=("--entrypoint", "sh", "-e", "FOO=given")) == "given\n"


def test_user_and_group_by_name_and_id(box: Layerfs) -> None:
    assert sorted(out(box, "id", "-G", options=("-u", "app")).split()) == ["1000", "50"], "supplementary groups too"
    assert out(box, "id", "-g", options=("-u", "app:other")).strip() == "1001"
    assert out(box, "id", "-u", options=("-u", "4242")).strip() == "4242"


def test_env_file(box: Layerfs) -> None:
    env_file = box.workdir / "vars"
    env_file.write_text("# a comment\nONE=1\nTWO=two words\n")
    box.give(env_file)
    assert out(box, "sh", "-c", "echo $ONE $TWO", options=("--env-file", str(env_file))) == "1 two words\n"


def test_exposed_ports_and_volumes_show_in_inspect(box: Layerfs) -> None:
    text = box.run("inspect", APP).stdout
    assert "Ports:      8080/tcp" in text and "Volumes:    /cache" in text
    box.run("create", "--name", "web", "-e", "X=1", "--network", "none", APP)
    inspected = json.loads(box.run("inspect", "web").stdout)
    assert inspected["config"]["exposed_ports"] == ["8080/tcp"]
    assert inspected["config"]["volumes"] == ["/cache"]
    assert inspected["config"]["argv"] == ["/bin/echo", "entry", "from-cmd"]
    assert "X=1" in inspected["config"]["env"] and inspected["host_config"]["network"] == "none"
    assert inspected["state"]["status"] == "created"
    box.run("start", "-a", "web")
    inspected = json.loads(box.run("inspect", "web").stdout)
    assert (inspected["state"]["status"], inspected["state"]["exit_code"]) == ("exited", 0)


# ---------------------------------------------------------------------------------------
# volumes, read-only, network
# ---------------------------------------------------------------------------------------

def test_named_volume_outlives_the_container(box: Layerfs) -> None:
    out(box, "sh", "-c", "echo kept > /data/file", options=("-v", "keep:/data"))
    assert [v["name"] for v in json.loads(box.run("volume", "ls", "--json").stdout)] == ["keep"]
    assert out(box, "cat", "/data/file", options=("-v", "keep:/data:ro")) == "kept\n"
    refused = run(box, "sh", "-c", "echo x > /data/other", options=("-v", "keep:/data:ro"))
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr


def test_a_new_volume_is_seeded_with_the_image_files(box: Layerfs) -> None:
    """As docker's: files, owners and modes of the image at the volume's path."""
    listing = out(box, "sh", "-c", "head -1 /etc/passwd; stat -c '%u %g %a' /etc/shadow; cat /etc/hostname",
                  options=("-v", "config:/etc", "--hostname", "seeded"))
    assert listing.splitlines() == ["root:x:0:0:root:/root:/bin/sh", "0 42 640", "seeded"]
    assert out(box, "stat", "-c", "%U %a", "/data", options=("-v", "home:/data")) == "root 755\n"
    assert out(box, "stat", "-c", "%U", "/home/app", options=("-v", "apphome:/home/app")) == "app\n"


def test_host_directory_binds(box: Layerfs) -> None:
    host = box.mkdir("shared")
    (host / "in").write_text("from the host\n")
    box.give(host)
    assert out(box, "sh", "-c", "cat /mnt/in; echo back > /mnt/out", options=("-v", f"{host}:/mnt")) == "from the host\n"
    assert (host / "out").read_text() == "back\n"


def test_anonymous_volumes_of_the_image(box: Layerfs) -> None:
    """Made at start; kept by `rm` (as docker's), removed by `--rm` and `rm -v`."""
    out(box, "-c", "touch /cache/x", image=APP, options=("--entrypoint", "sh", "-u", "root"))
    assert json.loads(box.run("volume", "ls", "--json").stdout) == [], "--rm takes them along"
    box.run("create", "--name", "keeps", "--entrypoint", "sh", "-u", "root", APP, "-c", "touch /cache/x")
    box.run("start", "-a", "keeps")
    assert len(json.loads(box.run("volume", "ls", "--json").stdout)) == 1
    box.run("rm", "-v", "keeps")
    assert json.loads(box.run("volume", "ls", "--json").stdout) == []


def test_read_only_root(box: Layerfs) -> None:
    proc = run(box, "touch", "/etc/x", options=("--read-only",))
    assert proc.returncode == 1 and "Read-only file system" in proc.stderr


def test_network_none_has_only_loopback(box: Layerfs) -> None:
    devices = [line.split(":")[0].strip() for line in out(box, "cat", "/proc/net/dev", options=("--network", "none"))
               .splitlines()[2:]]
    assert devices == ["lo"]
    assert "UP" in out(box, "ip", "link", "show", "lo", options=("--network", "none"))
    assert len(out(box, "cat", "/proc/net/dev").splitlines()) > 3, "the host's network by default"


def test_dev_and_proc_and_sys(box: Layerfs) -> None:
    listing = out(box, "ls", "/dev").split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin"} <= set(listing)
    assert out(box, "sh", "-c", "echo x > /dev/null && head -c 3 /dev/zero | wc -c") == "3\n"
    assert run(box, "touch", "/sys/x").returncode == 1, "/sys is read-only"
    assert out(box, "sh", "-c", "echo x > /dev/shm/f && cat /dev/shm/f") == "x\n"


# ---------------------------------------------------------------------------------------
# signals and terminals
# ---------------------------------------------------------------------------------------

def test_sigterm_to_layerfs_run_reaches_the_command(box: Layerfs) -> None:
    proc = spawn(box, "run", "--rm", BOX, "sh", "-c",
                 "trap 'echo got TERM; exit 5' TERM; echo ready; while true; do sleep 0.05; done")
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=20)
    assert (proc.returncode, stdout) == (5, b"got TERM\n")


def test_orphans_are_reaped(box: Layerfs) -> None:
    script = "(sleep 0.2 &); (sleep 0.2 &); sleep 1; cat /proc/[0-9]*/stat | cut -d' ' -f3 | sort | uniq -c"
    states = out(box, "sh", "-c", script)
    assert "Z" not in states.split()


def test_stop_sends_the_stop_signal_then_sigkill(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "polite", "--entrypoint", "sh", APP, "-c",
            "trap 'echo got USR1; exit 0' USR1; while true; do sleep 0.05; done")
    box.run("stop", "polite")
    assert box.run("logs", "polite").stdout == "got USR1\n"
    assert state_of(box, "polite")["exit_code"] == 0
    box.run("run", "-d", "--name", "stubborn", BOX, "sh", "-c", "trap '' TERM; while true; do sleep 0.05; done")
    started = time.monotonic()
    box.run("stop", "-t", "1", "stubborn")
    assert 1 <= time.monotonic() - started < 8
    assert (state_of(box, "stubborn")["status"], state_of(box, "stubborn")["exit_code"]) == ("exited", 137)


class Terminal:
    """A pty to drive a command as a user at a terminal would."""

    def __init__(self, lfs: Layerfs, *args: str, rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            argv = as_identity(lfs, [LAYERFS_BIN, "--root", str(lfs.root), *args])
            os.chdir(lfs.workdir)
            os.execvpe(argv[0], argv, lfs.env())
        self.resize(rows, cols)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, token: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while token not in self.seen:
            assert time.monotonic() < deadline, f"{token!r} never came; got {self.seen!r}"
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        before, _, self.seen = self.seen.partition(token)
        return before

    def wait(self) -> int:
        deadline = time.monotonic() + 20
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline
            with_data = select.select([self.fd], [], [], 0.1)[0]
            if with_data:
                try:
                    os.read(self.fd, 4096)
                except OSError:
                    pass


def test_tty_is_the_containers_own_and_follows_the_window(box: Layerfs) -> None:
    term = Terminal(box, "run", "--rm", "-it", BOX, "sh", rows=33, cols=111)
    term.expect(b"# ")
    term.send(b"tty; stty size; echo $TERM; echo do''ne\n")
    answer = term.expect(b"done\r\n").decode()
    assert "/dev/pts/0" in answer and "33 111" in answer and "xterm" in answer
    term.expect(b"# ")
    term.resize(44, 122)
    os.kill(term.pid, signal.SIGWINCH)
    time.sleep(0.3)
    term.send(b"stty size; echo do''ne\n")
    assert "44 122" in term.expect(b"done\r\n").decode()
    term.send(b"exit 3\n")
    assert term.wait() == 3


def test_ctrl_c_reaches_the_foreground_process_not_the_launcher(box: Layerfs) -> None:
    term = Terminal(box, "run", "--rm", "-it", BOX, "sh")
    term.expect(b"# ")
    term.send(b"sleep 100\n")
    time.sleep(0.5)
    term.send(b"\x03")
    term.send(b"echo after $?\n")
    term.expect(b"after 130")
    term.send(b"exit\n")
    assert term.wait() == 0, "the shell lived on, the launcher too"


def test_exec_with_a_tty(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "svc", BOX, "sleep", "100")
    term = Terminal(box, "exec", "-it", "svc", "sh")
    term.expect(b"# ")
    term.send(b"tty; echo en''d; exit 4\n")
    assert "/dev/pts/" in term.expect(b"end").decode()
    assert term.wait() == 4


# ---------------------------------------------------------------------------------------
# the life cycle
# ---------------------------------------------------------------------------------------

def test_detached_logs_exec_stop_start(box: Layerfs) -> None:
    script = "echo out; echo err >&2; while true; do sleep 0.05; done"
    started = box.run("run", "-d", "--name", "bg", BOX, "sh", "-c", script).stdout
    assert started == state_of(box, "bg")["id"] + "\n", "run -d prints the id, as docker's"
    wait_for(lambda: "err" in box.run("logs", "bg").stderr)
    logs = box.run("logs", "bg")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    assert state_of(box, "bg")["status"] == "running"
    assert "Up " in box.run("ps").stdout
    assert box.run("run", "-d", "--name", "bg2", BOX, "true").returncode == 0
    assert box.run("exec", "bg", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'").returncode == 0
    assert box.run("exec", "-e", "X=1", "-w", "/tmp", "-u", "app", "bg", "sh", "-c", "echo $X $(pwd) $(id -un)") \
        .stdout == "1 /tmp app\n"
    assert box.run("exec", "bg", "sh", "-c", "exit 9", check=False).returncode == 9
    assert box.run("exec", "bg", "no-such", check=False).returncode == 127
    # a second writer is refused while it runs
    busy = box.run("mount", "bg", str(box.mkdir("mp")), check=False)
    assert busy.returncode == 4 and "one writer" in busy.stderr
    assert box.run("commit", "bg", "snap:1", check=False).returncode == 4
    assert box.run("rm", "bg", check=False).returncode == 4
    box.run("stop", "bg")
    assert state_of(box, "bg")["status"] == "exited"
    assert box.run("exec", "bg", "true", check=False).returncode == 125
    box.run("start", "bg")
    wait_for(lambda: box.run("logs", "bg").stdout == "out\nout\n")
    stamped = box.run("logs", "--timestamps", "bg").stdout.splitlines()
    assert len(stamped) == 2 and all(line.endswith(" out") and line[:4].isdigit() for line in stamped)
    box.run("restart", "bg")
    assert state_of(box, "bg")["status"] == "running"
    box.run("rm", "-f", "bg")
    assert [c["name"] for c in json.loads(box.run("ps", "-a", "--json").stdout)] == ["bg2"]


def test_logs_follow_ends_with_the_container(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "short", BOX, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    assert box.run("logs", "-f", "short", timeout=30).stdout == "1\n2\n3\n"


def test_wait_prints_the_exit_code(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "w", BOX, "sh", "-c", "sleep 0.3; exit 3")
    assert box.run("wait", "w").stdout == "3\n"
    assert "Exited (3)" in box.run("ps", "-a").stdout


def test_pause_freezes_and_unpause_resumes(box: Layerfs) -> None:
    """Without cgroup delegation pause is SIGSTOP to every process of the container."""
    shared = box.mkdir("counter")
    box.run("run", "-d", "--name", "counter", "-v", f"{shared}:/out", BOX, "sh", "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /out/count.new; mv /out/count.new /out/count; sleep 0.05; done")
    wait_for(lambda: (shared / "count").exists())
    box.run("pause", "counter")
    assert state_of(box, "counter")["status"] == "paused"
    assert "(Paused)" in box.run("ps").stdout
    assert box.run("exec", "counter", "true", check=False).returncode == 4, "exec into a paused container"
    first = int((shared / "count").read_text())
    time.sleep(0.5)
    assert int((shared / "count").read_text()) == first
    box.run("unpause", "counter")
    time.sleep(0.5)
    assert int((shared / "count").read_text()) > first + 3


def test_twenty_containers_in_parallel(box: Layerfs) -> None:
    def one(i: int) -> tuple[int, str]:
        proc = box.run("run", "--rm", "--name", f"p{i}", BOX, "sh", "-c",
                       f"echo {i} > /tmp/mine; sleep 0.5; cat /tmp/mine; hostname", check=False, timeout=120)
        return proc.returncode, proc.stdout
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert [code for code, _ in results] == [0] * 20, results
    assert [text.split()[0] for _, text in results] == [str(i) for i in range(20)]
    assert len({text.split()[1] for _, text in results}) == 20, "each its own hostname"
    assert json.loads(box.run("ps", "-a", "--json").stdout) == []
    assert_nothing_left(box)


def test_killed_launcher_leaves_a_stopped_container_and_its_layer(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "crash", BOX, "sh", "-c",
            "while true; do echo line >> /root/log; sleep 0.02; done")
    time.sleep(0.5)
    monitor = json.loads((box.root / "containers" / state_of(box, "crash")["id"] / "state.json").read_text())["monitor"]
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: state_of(box, "crash")["status"] == "exited")
    assert state_of(box, "crash")["exit_code"] == 137
    assert_nothing_left(box)
    assert box.run("diff", "crash").stdout.split() == ["A", "/root/log"]
    box.run("start", "crash")
    lines = int(box.run("exec", "crash", "sh", "-c", "wc -l < /root/log").stdout)
    assert lines > 5
    box.run("rm", "-f", "crash")


def test_rm_of_a_run_container_leaves_nothing(box: Layerfs) -> None:
    out(box, "true")
    assert json.loads(box.run("ps", "-a", "--json").stdout) == []
    assert_nothing_left(box)


def test_changes_show_in_diff_and_commit(box: Layerfs) -> None:
    box.run("run", "--name", "work", BOX, "sh", "-c", "mkdir /srv/data && chown app /srv/data && rm /bin/not-executable")
    assert box.run("diff", "work").stdout.split() == ["D", "/bin/not-executable", "A", "/srv/data"]
    box.run("commit", "work", "work:1")
    assert out(box, "stat", "-c", "%U %F", "/srv/data", image="work:1") == "app directory\n"


# ---------------------------------------------------------------------------------------
# what the review found: the launcher's own edges
# ---------------------------------------------------------------------------------------

def test_detached_run_of_a_missing_command_fails_as_in_the_foreground(box: Layerfs) -> None:
    proc = box.run("run", "-d", "--name", "nothing", BOX, "no-such-command", check=False)
    assert proc.returncode == 127 and "no-such-command: executable file not found" in proc.stderr
    assert state_of(box, "nothing")["exit_code"] == 127
    assert box.run("start", "nothing", check=False).returncode == 127


def test_start_of_a_running_container_is_a_no_op(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "up", BOX, "sleep", "100")
    assert box.run("start", "up").stdout == "up\n"


def test_no_descriptor_of_the_caller_reaches_exec(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "fds", BOX, "sleep", "100")
    script = f'exec 7<"{box.workdir}"; exec "$@"'
    proc = box.sh(["sh", "-c", script, "sh", LAYERFS_BIN, "--root", str(box.root), "exec", "fds",
                   "ls", "/proc/self/fd"])
    assert proc.stdout.decode().split() == ["0", "1", "2", "3"], "stdio and ls's own directory only"
    assert out(box, "ls", "/proc/self/fd").split() == ["0", "1", "2", "3"]


def test_sigpipe_is_default_in_the_container(box: Layerfs) -> None:
    proc = run(box, "sh", "-c", "yes | head -1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "y\n", "")


def test_proc_is_masked_as_runc_masks_it(box: Layerfs) -> None:
    assert run(box, "sh", "-c", "echo h > /proc/sysrq-trigger").returncode != 0
    assert run(box, "sh", "-c", "echo core > /proc/sys/kernel/core_pattern").returncode != 0
    masked = [f"/proc/{name}" for name in ("kcore", "keys", "timer_list", "sched_debug") if os.path.isfile(f"/proc/{name}")]
    assert masked, "this kernel shows none of the files runc masks"
    assert out(box, "cat", *masked) == "", "masked: /dev/null bound over them"
    assert run(box, "mknod", "/tmp/disk", "b", "8", "0").returncode != 0, "no CAP_MKNOD, or no devices, here"


def test_image_symlinks_stay_inside_the_root(box: Layerfs) -> None:
    """Volume targets, the working directory and mount points below a link of the
    image land where the link leads inside the container, never on the host."""
    box.run("run", "--name", "links", BOX, "sh", "-c", "mkdir -p /real && ln -s /real /var/linked "
            "&& ln -s ../../../../../../tmp /srv/up")
    box.run("commit", "links", "links:1")
    escape = Path("/tmp") / f"escape-{uuid.uuid4().hex[:8]}"
    text = out(box, "sh", "-c", "ls /real; ls -d /tmp/escape-*", image="links:1",
               options=("-v", "data:/var/linked/data", "-w", f"/srv/up/{escape.name}"))
    assert text.split() == ["data", str(escape)]
    assert not escape.exists(), "the working directory was made inside, not on the host"


def test_a_killed_fuse_server_stops_the_container(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "orphan", BOX, "sleep", "100")
    daemon = next(r["pid"] for r in json.loads(box.run("mounts", "--json").stdout))
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: state_of(box, "orphan")["status"] == "exited")
    assert state_of(box, "orphan")["exit_code"] == 137
    assert_nothing_left(box)


def test_tty_without_stdin_still_takes_ctrl_c(box: Layerfs) -> None:
    term = Terminal(box, "run", "--rm", "-t", BOX, "sh", "-c", "echo rea''dy; sleep 100")
    term.expect(b"ready")
    term.send(b"\x03")
    assert term.wait() == 130


def test_detached_interactive_keeps_stdin_open(box: Layerfs) -> None:
    box.run("run", "-d", "-i", "--name", "waiting", BOX, "sh")
    time.sleep(0.5)
    assert state_of(box, "waiting")["status"] == "running", "sh waits on stdin, as with docker run -di"
    assert box.run("exec", "waiting", "echo", "hi").stdout == "hi\n"


def test_logs_follow_gets_the_last_partial_line(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "tail", BOX, "sh", "-c", "sleep 0.5; printf done")
    assert box.run("logs", "-f", "tail", timeout=30).stdout == "done"


def test_kill_then_rm(box: Layerfs) -> None:
    box.run("run", "-d", "--name", "k", BOX, "sleep", "100")
    box.run("kill", "k")
    box.run("rm", "k")
    assert json.loads(box.run("ps", "-a", "--json").stdout) == []


def test_a_long_line_keeps_one_timestamp(box: Layerfs) -> None:
    """The log cuts lines past 16 KiB into pieces; `logs -t` stamps the line once."""
    box.run("run", "-d", "--name", "long", BOX, "sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo")
    box.run("wait", "long")
    assert box.run("logs", "long").stdout == "x" * 40000 + "\n"
    stamped = box.run("logs", "-t", "long").stdout.splitlines()
    assert len(stamped) == 1 and stamped[0].endswith(" " + "x" * 40000) and stamped[0][:4].isdigit()


def test_a_first_start_sees_the_image_as_a_later_start_does(box: Layerfs) -> None:
    """A container's first start reads its root from the image's tree in memory
    (launcher/paths.py), a later one through its mount: the same mount points made,
    links followed the same way, the same user found, for an image whose /etc is full
    of links (resolv.conf to a file that is not there, passwd and group to files
    elsewhere, relative and absolute), the working directory below a link, and
    /etc/hosts deleted by a whiteout."""
    top = make_layer([
        directory("data"), directory("data/etc"), file("data/etc/passwd", PASSWD), file("data/etc/group", GROUP),
        whiteout("etc/passwd"), symlink("etc/passwd", "../data/etc/passwd"),
        whiteout("etc/group"), symlink("etc/group", "/data/etc/group"),
        symlink("etc/resolv.conf", "/run/missing/stub-resolv.conf"), whiteout("etc/hosts"),
        directory("real"), directory("real/work"), symlink("srv/linked", "/real"),
    ])
    source = box.workdir / f"src-{uuid.uuid4().hex[:8]}"
    write_oci_layout(source, [runnable_layer(), top], config={"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})
    box.give(source)
    box.run("import", f"oci:{source}", "odd:1", "-q")
    script = ("id -un; id -gn; pwd; cat /etc/hostname; ls /etc/hosts; readlink /etc/resolv.conf; "
              "ls /real; ls -d /proc/1 /sys/kernel /dev/null")
    options = ("-u", "app", "-w", "/srv/linked/work/here", "--hostname", "same")
    first = out(box, "sh", "-c", script, image="odd:1", options=options)
    box.run("create", "--name", "twice", *options, "odd:1", "sh", "-c", script)
    starts = [box.run("start", "-a", "twice").stdout for _ in range(2)]
    assert starts == [first, first]
    assert first.split() == ["app", "app", "/real/work/here", "same", "/etc/hosts",
                             "/run/missing/stub-resolv.conf", "work", "/dev/null", "/proc/1", "/sys/kernel"]
    assert "/etc/hosts" not in box.run("diff", "twice").stdout, "a mount point made for the start is no change"
