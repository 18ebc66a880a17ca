"""The image config and `run` options as docker and podman merge them, and USER specs
as runc resolves them against an image's /etc/passwd and /etc/group.

The inputs are real ones: image configs shaped like the OCI spec's example and
like the postgres, nginx and busybox images', Debian's passwd and group files with
the users images add (postgres in ssl-cert, as the postgres image puts it), and
env files written as docker's documentation shows them.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from launcher.config import DEFAULT_PATH, ProcessSpec, parse_signal, process_spec, read_env_file
from launcher.users import ExecUser, resolve_user
from layerfs.errors import BadInput, LayerfsError

DEBIAN_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The example in the OCI image spec's config.md.
OCI_EXAMPLE: dict[str, Any] = {
    "User": "alice",
    "ExposedPorts": {"8080/tcp": {}},
    "Env": [DEBIAN_PATH, "FOO=oci_is_a", "BAR=well_written_spec"],
    "Entrypoint": ["/bin/my-app-binary"],
    "Cmd": ["--foreground", "--config", "/etc/my-app.d/default.cfg"],
    "Volumes": {"/var/log/my-app-logs": {}, "/var/job-result-data": {}},
    "WorkingDir": "/home/alice",
    "Labels": {"com.example.project.git.url": "https://example.com/project.git"},
}

POSTGRES: dict[str, Any] = {
    "Env": [DEBIAN_PATH + ":/usr/lib/postgresql/16/bin",
            "GOSU_VERSION=1.17", "LANG=en_US.utf8", "PG_MAJOR=16",
            "PGDATA=/var/lib/postgresql/data"],
    "Entrypoint": ["docker-entrypoint.sh"],
    "Cmd": ["postgres"],
    "Volumes": {"/var/lib/postgresql/data": {}},
    "ExposedPorts": {"5432/tcp": {}},
    "StopSignal": "SIGINT",
}

NGINX: dict[str, Any] = {
    "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
    "Env": [DEBIAN_PATH, "NGINX_VERSION=1.25.4"],
    "Entrypoint": ["/docker-entrypoint.sh"],
    "Cmd": ["nginx", "-g", "daemon off;"],
    "StopSignal": "SIGQUIT",
    "Labels": {"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>"},
}

BUSYBOX: dict[str, Any] = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                           "Cmd": ["sh"]}

# An image made `FROM scratch` with one static binary: no Env, no Cmd.
SCRATCH: dict[str, Any] = {"Entrypoint": ["/hello"]}

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
postgres:x:999:999::/var/lib/postgresql:/bin/bash
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
news:x:9:
uucp:x:10:
man:x:12:
proxy:x:13:
kmem:x:15:
dialout:x:20:
cdrom:x:24:
floppy:x:25:
tape:x:26:
sudo:x:27:
audio:x:29:
dip:x:30:
www-data:x:33:
backup:x:34:
operator:x:37:
list:x:38:
irc:x:39:
src:x:40:
shadow:x:42:
utmp:x:43:
video:x:44:www-data
sasl:x:45:
plugdev:x:46:
staff:x:50:
games:x:60:
users:x:100:
nogroup:x:65534:
ssl-cert:x:101:postgres,www-data
postgres:x:999:
"""


def spec(config: dict[str, Any], command: list[str] | None = None, *,
         entrypoint: str | None = None, env: list[str] | None = None,
         env_files: list[Path] | None = None, workdir: str | None = None,
         user: str | None = None, host_env: dict[str, str] | None = None) -> ProcessSpec:
    return process_spec(config, command, entrypoint, env or [], env_files or [], workdir, user,
                        host_env or {})


# --- argv: Entrypoint, Cmd, arguments, --entrypoint -------------------------------------------

def test_entrypoint_then_cmd() -> None:
    assert spec(OCI_EXAMPLE).argv == ["/bin/my-app-binary", "--foreground", "--config",
                                      "/etc/my-app.d/default.cfg"]
    assert spec(NGINX).argv == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]


def test_arguments_replace_cmd_only() -> None:
    assert spec(POSTGRES, ["postgres", "-c", "fsync=off"]).argv == [
        "docker-entrypoint.sh", "postgres", "-c", "fsync=off"]
    assert spec(BUSYBOX, ["echo", "hi"]).argv == ["echo", "hi"]


def test_no_arguments_is_no_arguments() -> None:
    assert spec(BUSYBOX, []).argv == spec(BUSYBOX, None).argv == ["sh"]


def test_entrypoint_option_drops_the_image_cmd() -> None:
    assert spec(NGINX, entrypoint="/bin/sh").argv == ["/bin/sh"]
    assert spec(NGINX, ["-c", "nginx -t"], entrypoint="/bin/sh").argv == ["/bin/sh", "-c", "nginx -t"]
    assert spec(BUSYBOX, entrypoint="/bin/true").argv == ["/bin/true"]


def test_entrypoint_option_is_one_word() -> None:
    # Docker takes the value as the program's name, spaces and brackets included.
    assert spec(BUSYBOX, entrypoint='["/bin/echo", "x"]').argv == ['["/bin/echo", "x"]']


def test_empty_entrypoint_clears_it_and_runs_the_arguments() -> None:
    assert spec(POSTGRES, ["bash", "-l"], entrypoint="").argv == ["bash", "-l"]


def test_empty_entrypoint_without_arguments_does_not_fall_back_to_cmd() -> None:
    # podman's makeCommand and moby's mergeAndVerifyConfig both refuse it.
    with pytest.raises(LayerfsError, match="entrypoint"):
        spec(POSTGRES, entrypoint="")


def test_image_entrypoint_of_one_empty_string_means_none() -> None:
    assert spec({"Entrypoint": [""], "Cmd": ["/bin/sh"]}).argv == ["/bin/sh"]
    assert spec({"Entrypoint": [""], "Cmd": ["/bin/sh"]}, ["ls"]).argv == ["ls"]


def test_lone_string_entrypoint_and_cmd_read_as_one_element() -> None:
    # docker's strslice takes "Cmd": "sh" as ["sh"]; old images carry it.
    assert spec({"Entrypoint": "/init", "Cmd": "serve"}).argv == ["/init", "serve"]


def test_no_command_at_all() -> None:
    with pytest.raises(LayerfsError, match="neither Entrypoint nor Cmd"):
        spec({"Env": [DEBIAN_PATH]})
    with pytest.raises(LayerfsError, match="neither Entrypoint nor Cmd"):
        spec({"Entrypoint": None, "Cmd": None}, [])


def test_scratch_image_runs_its_entrypoint() -> None:
    assert spec(SCRATCH).argv == ["/hello"]
    assert spec(SCRATCH, ["--verbose"]).argv == ["/hello", "--verbose"]


@pytest.mark.parametrize("key,value", [("Entrypoint", {"sh": 1}), ("Cmd", ["sh", 3]),
                                       ("Entrypoint", 7)])
def test_malformed_command_in_image(key: str, value: Any) -> None:
    with pytest.raises(BadInput, match=key):
        spec(dict(BUSYBOX, **{key: value}))


# --- environment --------------------------------------------------------------------------------

def test_image_env_kept_in_order() -> None:
    assert spec(OCI_EXAMPLE).env == [DEBIAN_PATH, "FOO=oci_is_a", "BAR=well_written_spec"]


def test_default_path_added_first_only_when_nobody_sets_one() -> None:
    assert spec(SCRATCH).env == [f"PATH={DEFAULT_PATH}"]
    assert spec(SCRATCH, env=["A=1"]).env == [f"PATH={DEFAULT_PATH}", "A=1"]
    assert spec(SCRATCH, env=["PATH=/opt/bin"]).env == ["PATH=/opt/bin"]
    assert spec(POSTGRES).env[0].endswith("/usr/lib/postgresql/16/bin")
    assert DEFAULT_PATH == DEBIAN_PATH.removeprefix("PATH=")


def test_no_home_or_hostname_here() -> None:
    keys = {entry.partition("=")[0] for entry in spec(NGINX).env}
    assert "HOME" not in keys and "HOSTNAME" not in keys


def test_option_overrides_image_value_in_its_place() -> None:
    assert spec(OCI_EXAMPLE, env=["FOO=override", "NEW=1"]).env == [
        DEBIAN_PATH, "FOO=override", "BAR=well_written_spec", "NEW=1"]


def test_later_option_wins() -> None:
    assert spec(SCRATCH, env=["A=1", "B=2", "A=3"]).env == [f"PATH={DEFAULT_PATH}", "A=3", "B=2"]


def test_option_values_keep_equals_and_may_be_empty() -> None:
    env = spec(SCRATCH, env=["DSN=host=db port=5432", "EMPTY="]).env
    assert env[1:] == ["DSN=host=db port=5432", "EMPTY="]


def test_bare_key_takes_the_callers_value() -> None:
    env = spec(POSTGRES, env=["TZ", "LANG"], host_env={"TZ": "Europe/Paris", "LANG": "C.UTF-8"}).env
    assert "TZ=Europe/Paris" in env and "LANG=C.UTF-8" in env and "LANG=en_US.utf8" not in env


def test_bare_key_unset_is_left_out_and_the_image_value_stays() -> None:
    env = spec(POSTGRES, env=["PGDATA", "NOT_SET"], host_env={"TZ": "UTC"}).env
    assert "PGDATA=/var/lib/postgresql/data" in env
    assert not any(e.startswith("NOT_SET") for e in env)


def test_bare_key_set_to_empty_on_the_host_is_passed_empty() -> None:
    assert spec(SCRATCH, env=["DEBUG"], host_env={"DEBUG": ""}).env[1:] == ["DEBUG="]


@pytest.mark.parametrize("bad", ["", "=value", "="])
def test_option_without_a_name(bad: str) -> None:
    with pytest.raises(BadInput) as caught:
        spec(BUSYBOX, env=["OK=1", bad])
    assert repr(bad) in caught.value.message


def test_image_env_entry_without_equals_is_refused() -> None:
    with pytest.raises(BadInput, match="JUSTNAME"):
        spec({"Env": [DEBIAN_PATH, "JUSTNAME"], "Cmd": ["sh"]})
    with pytest.raises(BadInput, match="Env"):
        spec({"Env": "PATH=/bin", "Cmd": ["sh"]})


ENV_FILE = (
    "# database settings\n"
    "\n"
    "POSTGRES_USER=app\n"
    "   POSTGRES_DB=appdb\n"
    "POSTGRES_PASSWORD=\"quoted stays quoted\"\n"
    "GREETING=hello world  \n"
    "URL=postgres://app@db/appdb?sslmode=disable\n"
    "\t# an indented comment\n"
    "TZ\n"
    "NOT_ON_HOST\n"
    "EMPTY=\n"
)


def test_env_file_read_as_docker_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "db.env"
    path.write_text(ENV_FILE)
    assert read_env_file(path, {"TZ": "UTC"}) == [
        "POSTGRES_USER=app",
        "POSTGRES_DB=appdb",
        'POSTGRES_PASSWORD="quoted stays quoted"',
        "GREETING=hello world  ",
        "URL=postgres://app@db/appdb?sslmode=disable",
        "TZ=UTC",
        "EMPTY=",
    ]


def test_env_file_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "windows.env"
    path.write_bytes(b"\xef\xbb\xbfA=1\r\nB=2\r\n")
    assert read_env_file(path, {}) == ["A=1", "B=2"]


def test_env_files_then_options(tmp_path: Path) -> None:
    first, second = tmp_path / "base.env", tmp_path / "local.env"
    first.write_text("A=base\nB=base\nC=base\n")
    second.write_text("B=local\n")
    env = spec(BUSYBOX, env=["C=option"], env_files=[first, second]).env
    assert env == [BUSYBOX["Env"][0], "A=base", "B=local", "C=option"]


def test_env_file_overrides_image(tmp_path: Path) -> None:
    path = tmp_path / "pg.env"
    path.write_text("PGDATA=/data\n")
    env = spec(POSTGRES, env_files=[path]).env
    assert env[4] == "PGDATA=/data" and len(env) == 5


@pytest.mark.parametrize("line,named", [("MY VAR=1", "MY VAR"), ("A\tB=1", "A\tB"),
                                        ("KEY =1", "KEY "), ("=orphan", "no variable name")])
def test_env_file_bad_key(tmp_path: Path, line: str, named: str) -> None:
    path = tmp_path / "bad.env"
    path.write_text(f"GOOD=1\n{line}\n")
    with pytest.raises(BadInput) as caught:
        spec(BUSYBOX, env_files=[path])
    assert str(path) in caught.value.message and "line 2" in caught.value.message
    assert named in caught.value.message or repr(named) in caught.value.message


def test_env_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.env"
    path.write_bytes(b"NAME=caf\xe9\n")
    with pytest.raises(BadInput, match="UTF-8"):
        spec(BUSYBOX, env_files=[path])


def test_env_file_missing_or_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.env"
    with pytest.raises(LayerfsError, match="missing.env"):
        spec(BUSYBOX, env_files=[missing])
    with pytest.raises(LayerfsError, match="is a directory|Is a directory"):
        spec(BUSYBOX, env_files=[tmp_path])


# --- working directory, user ---------------------------------------------------------------------

def test_working_directory() -> None:
    assert spec(OCI_EXAMPLE).cwd == "/home/alice"
    assert spec(OCI_EXAMPLE, workdir="/tmp").cwd == "/tmp"
    assert spec(OCI_EXAMPLE, workdir="").cwd == "/home/alice"   # docker: empty means the image's
    assert spec(BUSYBOX).cwd == "/"
    assert spec(dict(BUSYBOX, WorkingDir="")).cwd == "/"


def test_relative_working_directory() -> None:
    with pytest.raises(BadInput, match="-w 'app'"):
        spec(BUSYBOX, workdir="app")
    with pytest.raises(BadInput, match="WorkingDir 'srv'"):
        spec(dict(BUSYBOX, WorkingDir="srv"))


def test_user() -> None:
    assert spec(OCI_EXAMPLE).user == "alice"
    assert spec(OCI_EXAMPLE, user="1000:1000").user == "1000:1000"
    assert spec(OCI_EXAMPLE, user="").user == "alice"
    assert spec(BUSYBOX).user == ""
    with pytest.raises(BadInput, match="User"):
        spec(dict(BUSYBOX, User=0))


# --- stop signal, volumes, ports -----------------------------------------------------------------

def test_stop_signal_from_the_image() -> None:
    assert spec(POSTGRES).stop_signal == signal.SIGINT
    assert spec(NGINX).stop_signal == signal.SIGQUIT
    assert spec(BUSYBOX).stop_signal == signal.SIGTERM
    assert spec(dict(BUSYBOX, StopSignal="")).stop_signal == signal.SIGTERM


@pytest.mark.parametrize("text,number", [
    ("SIGTERM", 15), ("TERM", 15), ("term", 15), ("SigTerm", 15), ("15", 15), ("+15", 15),
    ("SIGKILL", 9), ("9", 9), ("SIGQUIT", 3), ("SIGWINCH", signal.SIGWINCH), ("SIGCLD", 17),
    ("SIGIOT", 6), ("STKFLT", 16), ("SIGRTMIN", 34), ("SIGRTMIN+3", 37), ("RTMIN+15", 49),
    ("SIGRTMAX", 64), ("RTMAX-1", 63), ("SIGRTMAX-14", 50), ("64", 64),
])
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["0", "-9", "65", "SIGFOO", "SIG", "", "RTMIN+16", "RTMAX-15",
                                  " SIGTERM", "SIGSIGTERM", "15.0", "SIGRTMIN+0"])
def test_parse_signal_refuses(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_signal(text)
    assert repr(text) in caught.value.message


def test_bad_stop_signal_in_image() -> None:
    with pytest.raises(BadInput, match="SIGNOPE"):
        spec(dict(BUSYBOX, StopSignal="SIGNOPE"))


def test_volumes_and_ports_sorted() -> None:
    got = spec(OCI_EXAMPLE)
    assert got.volumes == ["/var/job-result-data", "/var/log/my-app-logs"]
    assert got.exposed_ports == ["8080/tcp"]
    assert spec(NGINX).exposed_ports == ["443/tcp", "80/tcp"]
    assert spec(BUSYBOX).volumes == [] and spec(BUSYBOX).exposed_ports == []
    assert spec(dict(BUSYBOX, Volumes=None, ExposedPorts=None)).volumes == []
    with pytest.raises(BadInput, match="Volumes"):
        spec(dict(BUSYBOX, Volumes=["/data"]))


# --- the record ----------------------------------------------------------------------------------

def test_record_round_trip(tmp_path: Path) -> None:
    env_file = tmp_path / "web.env"
    env_file.write_text("WORKERS=4\n")
    original = spec(NGINX, ["nginx-debug", "-g", "daemon off;"], env=["TZ"], env_files=[env_file],
                    workdir="/usr/share/nginx/html", user="www-data", host_env={"TZ": "UTC"})
    stored = json.loads(json.dumps(original.to_json()))
    assert ProcessSpec.from_json(stored) == original
    assert stored == {
        "argv": ["/docker-entrypoint.sh", "nginx-debug", "-g", "daemon off;"],
        "env": [DEBIAN_PATH, "NGINX_VERSION=1.25.4", "WORKERS=4", "TZ=UTC"],
        "cwd": "/usr/share/nginx/html", "user": "www-data", "stop_signal": 3,
        "volumes": [], "exposed_ports": ["443/tcp", "80/tcp"],
    }


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec(BUSYBOX).cwd = "/tmp"   # type: ignore[misc]


# --- users ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("user,expected", [
    ("", ExecUser(0, 0, (0,), "/root")),
    ("root", ExecUser(0, 0, (0,), "/root")),
    ("0", ExecUser(0, 0, (0,), "/root")),
    ("postgres", ExecUser(999, 999, (999, 101), "/var/lib/postgresql")),
    ("999", ExecUser(999, 999, (999, 101), "/var/lib/postgresql")),
    ("www-data", ExecUser(33, 33, (33, 44, 101), "/var/www")),
    ("+33", ExecUser(33, 33, (33, 44, 101), "/var/www")),     # Go's Atoi reads "+33" as 33
    ("_apt", ExecUser(42, 65534, (65534,), "/nonexistent")),
    ("nobody", ExecUser(65534, 65534, (65534,), "/nonexistent")),
    ("postgres:", ExecUser(999, 999, (999, 101), "/var/lib/postgresql")),
])
def test_user_from_passwd(user: str, expected: ExecUser) -> None:
    assert resolve_user(user, PASSWD, GROUP) == expected


def test_explicit_group_replaces_gid_and_drops_supplementary_groups() -> None:
    assert resolve_user("postgres:www-data", PASSWD, GROUP) == ExecUser(999, 33, (33,),
                                                                        "/var/lib/postgresql")
    assert resolve_user("postgres:33", PASSWD, GROUP) == ExecUser(999, 33, (33,),
                                                                  "/var/lib/postgresql")
    assert resolve_user("www-data:ssl-cert", PASSWD, GROUP) == ExecUser(33, 101, (101,), "/var/www")


def test_numeric_ids_without_entries() -> None:
    # runc: the uid as given, gid 0 (its default), no supplementary groups, home "/".
    assert resolve_user("1000", PASSWD, GROUP) == ExecUser(1000, 0, (0,), "/")
    assert resolve_user("1000:1000", PASSWD, GROUP) == ExecUser(1000, 1000, (1000,), "/")
    assert resolve_user("1000:staff", PASSWD, GROUP) == ExecUser(1000, 50, (50,), "/")
    assert resolve_user("www-data:5555", PASSWD, GROUP) == ExecUser(33, 5555, (5555,), "/var/www")
    assert resolve_user("4294967294", PASSWD, GROUP).uid == 4294967294


def test_missing_files() -> None:
    assert resolve_user("", None, None) == ExecUser(0, 0, (0,), "/")
    assert resolve_user("1000:100", None, None) == ExecUser(1000, 100, (100,), "/")
    assert resolve_user("postgres", PASSWD, None) == ExecUser(999, 999, (999,), "/var/lib/postgresql")
    with pytest.raises(LayerfsError, match="postgres.*no /etc/passwd"):
        resolve_user("postgres", None, GROUP)
    with pytest.raises(LayerfsError, match="staff.*no /etc/group"):
        resolve_user("postgres:staff", PASSWD, None)


def test_empty_spec_without_a_root_entry() -> None:
    passwd = "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
    assert resolve_user("", passwd, GROUP) == ExecUser(0, 0, (0,), "/")


def test_root_gets_the_groups_that_list_it() -> None:
    group = GROUP.replace("adm:x:4:", "adm:x:4:root").replace("disk:x:6:", "disk:x:6:root")
    assert resolve_user("", PASSWD, group).groups == (0, 4, 6)
    assert resolve_user("root:root", PASSWD, group).groups == (0,)


def test_unknown_names() -> None:
    with pytest.raises(LayerfsError, match="unable to find user mysql: no matching entries in "
                                           "passwd file"):
        resolve_user("mysql", PASSWD, GROUP)
    with pytest.raises(LayerfsError, match="unable to find group docker"):
        resolve_user("postgres:docker", PASSWD, GROUP)


def test_numeric_spec_is_always_an_id() -> None:
    # A user named "1000" (uid 2000) does not answer to "1000": numbers are uids.
    passwd = PASSWD + "1000:x:2000:2000::/home/odd:/bin/sh\n"
    assert resolve_user("1000", passwd, GROUP) == ExecUser(1000, 0, (0,), "/")


def test_first_match_wins() -> None:
    passwd = PASSWD + "postgres:x:5432:5432::/srv/pg:/bin/sh\n"
    group = GROUP + "www-data:x:3333:\n"
    assert resolve_user("postgres:www-data", passwd, group) == ExecUser(999, 33, (33,),
                                                                        "/var/lib/postgresql")


def test_primary_group_listed_once() -> None:
    group = GROUP.replace("postgres:x:999:", "postgres:x:999:postgres")
    assert resolve_user("postgres", PASSWD, group).groups == (999, 101)


def test_comments_blank_lines_and_short_entries() -> None:
    passwd = "# generated by the image build\n\n  \n" + PASSWD + "svc:x:500:500\n"
    group = "# groups\n\n" + GROUP + "svcgroup:x:501:svc\n"
    assert resolve_user("", passwd, group) == ExecUser(0, 0, (0,), "/root")
    assert resolve_user("svc", passwd, group) == ExecUser(500, 500, (500, 501), "/")


@pytest.mark.parametrize("user,named", [("-1", "-1"), ("4294967295", "4294967295"),
                                        ("postgres:-5", "-5"), ("0:4294967295", "4294967295"),
                                        ("99999999999999999999", "99999999999999999999")])
def test_ids_out_of_range(user: str, named: str) -> None:
    with pytest.raises(BadInput) as caught:
        resolve_user(user, PASSWD, GROUP)
    assert named in caught.value.message and "out of range" in caught.value.message
