"""The config loader: real files in temporary directories, exact problem lines."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from huddle.cli import translate_legacy
from huddle.config import (
    AppConfig,
    ApplicationConfig,
    HealthConfig,
    RepositoryConfig,
    TimingConfig,
    load_file,
    load_paths,
    parse_command,
    ref_name_problem,
)
from huddle.errors import ConfigErrors

CONFIGS = Path(__file__).parent / "configs"
MINIMAL = {"repository": {"local path": "/srv/app"}, "application": {"start": "app"}}
MINIMAL_INI = "[repository]\nlocal path = /srv/app\n[application]\nstart = app\n"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_json(directory: Path, sections: dict, name: str = "app.json") -> Path:
    """MINIMAL with `sections` merged in, one level deep (None deletes a key)."""
    doc = json.loads(json.dumps(MINIMAL))
    for section, body in sections.items():
        merged = {**doc.get(section, {}), **body} if isinstance(body, dict) else body
        doc[section] = (
            {k: v for k, v in merged.items() if v is not None}
            if isinstance(merged, dict)
            else merged
        )
    return write(directory, name, json.dumps(doc))


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_file(path)
    return [str(p) for p in caught.value.problems]


# -- the seed forms --------------------------------------------------------------------------

SPEC_APP = dict(
    repository=RepositoryConfig(
        local_path=Path("/opt/apps/web"),
        remote="origin",
        remote_path="https://git.example.com/web.git",
        branch="main",
        executable="git",
    ),
    timing=TimingConfig(10.0, 20.0),
    application=ApplicationConfig(start=("python3", "-m", "web", "--port", "8080")),
    health=HealthConfig(
        type="http",
        host="127.0.0.1",
        port=8080,
        path="/healthz",
        status=((200, 399),),
        interval_s=10.0,
        timeout_s=3.0,
        retries=3,
        grace_s=10.0,
    ),
)


@pytest.mark.parametrize(
    "path", [CONFIGS / "spec_json" / "web.json", CONFIGS / "spec_ini" / "web.ini"]
)
def test_the_spec_examples_load_to_the_same_app(path):
    assert load_file(path) == AppConfig(name="web", source=path, **SPEC_APP)


def test_defaults_where_the_file_is_silent(tmp_path):
    app = load_file(write_json(tmp_path, {}))
    assert app.repository == RepositoryConfig(Path("/srv/app"), "origin", "", "master", "git")
    assert app.timing == TimingConfig(10.0, 20.0)
    assert app.application == ApplicationConfig(
        start=("app",), install=None, stop_timeout_s=10.0, environment={}
    )
    assert app.health == HealthConfig(type="none", port=None)
    assert app.name == "app"


def test_keys_with_underscores_and_any_case(tmp_path):
    path = write(
        tmp_path,
        "svc.ini",
        """\
        [Repository]
        Local_Path = /srv/svc
        REMOTE_PATH = ./origin.git
        [application]
        start = svc
        stop_timeout = 2.5
        """,
    )
    app = load_file(path)
    assert app.repository.local_path == Path("/srv/svc")
    assert app.repository.remote_path == str(tmp_path / "origin.git")
    assert app.application.stop_timeout_s == 2.5


def test_ini_takes_both_delimiters_and_an_empty_remote_path(tmp_path):
    path = write(
        tmp_path,
        "a.ini",
        """\
        [repository]
        local path: /srv/a
        remote path =
        branch: release/1.x
        [timing]
        minimum: 1.5
        maximum = 3
        [application]
        start: run --fast
        """,
    )
    app = load_file(path)
    assert app.repository.remote_path == ""
    assert app.repository.branch == "release/1.x"
    assert app.timing == TimingConfig(1.5, 3.0)
    assert app.application.start == ("run", "--fast")


def test_json_empty_remote_path_means_the_clone_has_its_remote(tmp_path):
    app = load_file(write_json(tmp_path, {"repository": {"remote path": ""}}))
    assert app.repository.remote_path == ""


def test_relative_paths_resolve_against_the_config_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "etc" / "huddle"
    path = write_json(
        conf, {"repository": {"local path": "../apps/web", "remote path": "../../repos/web.git"}}
    )
    rel = Path(os.path.relpath(path, tmp_path))  # given relative to the cwd
    app = load_file(rel)
    assert app.repository.local_path == tmp_path / "etc" / "apps" / "web"
    assert app.repository.remote_path == str(tmp_path / "repos" / "web.git")
    assert app.source == rel


@pytest.mark.parametrize(
    "remote_path",
    ["https://h/x.git", "git@host:x.git", "web.git", "/abs/x.git", "file:///abs/x.git"],
)
def test_other_remote_paths_stay_as_written(tmp_path, remote_path):
    app = load_file(write_json(tmp_path, {"repository": {"remote path": remote_path}}))
    assert app.repository.remote_path == remote_path


def test_tilde_in_local_path_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    app = load_file(write_json(tmp_path, {"repository": {"local path": "~/apps/a"}}))
    assert app.repository.local_path == tmp_path / "home" / "apps" / "a"


@pytest.mark.parametrize(
    "text, argv",
    [
        ("python3 -m web --port 8080", ("python3", "-m", "web", "--port", "8080")),
        ("  app  'two words' \"x y\" ", ("app", "two words", "x y")),
        ("python -c 'print(\"a|b; $x\")'", ("python", "-c", 'print("a|b; $x")')),
        (r"echo a\|b", ("echo", "a|b")),
        ("a=b", ("/bin/sh", "-c", "a=b")),
        ("run --opt=x#y", ("run", "--opt=x#y")),
        ("pip install -r requirements.txt | tee log", None),
        ("make && ./serve", None),
        ("a; b", None),
        ("app > log 2>&1", None),
        ("app < in", None),
        ("app $PORT", None),
        ('app "$HOME/x"', None),
        ("app `date`", None),
        ("rm *.pyc", None),
        ("app file?", None),
        ("ls [ab]", None),
        ("~/bin/app", None),
        ("app # comment", None),
        ("PORT=8080 app", None),
        ("cd src && app", None),
        ("exec app", None),
        ("(app)", None),
        ("app &", None),
        ("a\nb", None),
    ],
)
def test_parse_command_uses_a_shell_only_when_needed(text, argv):
    assert parse_command(text) == (argv or ("/bin/sh", "-c", text.strip()))


@pytest.mark.parametrize(
    "text, message",
    [("", "empty command"), ("   ", "empty command"), ("app 'open", "No closing quotation")],
)
def test_parse_command_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        parse_command(text)


def test_json_commands_may_be_argv_lists(tmp_path):
    app = load_file(
        write_json(
            tmp_path,
            {
                "application": {
                    "start": ["python3", "-m", "web", "a | b"],
                    "install": ["pip", "install", "."],
                }
            },
        )
    )
    assert app.application.start == ("python3", "-m", "web", "a | b")
    assert app.application.install == ("pip", "install", ".")


def test_install_and_environment_in_ini(tmp_path):
    path = write(
        tmp_path,
        "e.ini",
        MINIMAL_INI
        + """\
install = pip install -r requirements.txt
[environment]
PYTHONPATH = src
Mixed_Case = a=b
""",
    )
    app = load_file(path)
    assert app.application.install == ("pip", "install", "-r", "requirements.txt")
    assert app.application.environment == {"PYTHONPATH": "src", "Mixed_Case": "a=b"}


def test_environment_in_json(tmp_path):
    app = load_file(write_json(tmp_path, {"application": {"environment": {"A_b": "1"}}}))
    assert app.application.environment == {"A_b": "1"}


@pytest.mark.parametrize(
    "status, ranges",
    [
        ("200", ((200, 200),)),
        ("200-399", ((200, 399),)),
        (204, ((204, 204),)),
        ("200,204, 300-399", ((200, 200), (204, 204), (300, 399))),
        ([200, "301-302"], ((200, 200), (301, 302))),
    ],
)
def test_status_forms(tmp_path, status, ranges):
    app = load_file(
        write_json(tmp_path, {"health": {"type": "http", "port": 80, "status": status}})
    )
    assert app.health.status == ranges
    assert app.health.accepts(ranges[-1][1]) and not app.health.accepts(599)


def test_ini_status_list_and_byte_escapes(tmp_path):
    path = write(
        tmp_path,
        "s.ini",
        MINIMAL_INI
        + r"""
[health]
type = socket
host = ::1
port = 7000
send = PING\r\n\x00\\é
expect = PONG\n
interval = 0.5
timeout = 0.25
retries = 5
grace = 0
""",
    )
    health = load_file(path).health
    assert health == HealthConfig(
        type="socket",
        host="::1",
        port=7000,
        send=b"PING\r\n\x00\\" + "é".encode(),
        expect=b"PONG\n",
        interval_s=0.5,
        timeout_s=0.25,
        retries=5,
        grace_s=0.0,
    )


def test_json_send_is_taken_literally(tmp_path):
    app = load_file(
        write_json(
            tmp_path, {"health": {"type": "socket", "port": 9, "send": "a\\r\r\n", "expect": "ok"}}
        )
    )
    assert app.health.send == b"a\\r\r\n"
    assert app.health.expect == b"ok"


def test_only_minimum_or_maximum_keeps_the_pair_ordered(tmp_path):
    assert load_file(write_json(tmp_path, {"timing": {"minimum": 60}})).timing == TimingConfig(
        60.0, 60.0
    )
    assert load_file(write_json(tmp_path, {"timing": {"minimum": 5}})).timing == TimingConfig(
        5.0, 20.0
    )
    assert load_file(write_json(tmp_path, {"timing": {"maximum": 4}})).timing == TimingConfig(
        4.0, 4.0
    )


# -- every class of mistake, as the user sees it ----------------------------------------------


@pytest.mark.parametrize(
    "sections, line",
    [
        ({"helth": {}}, "helth: unknown section; did you mean 'health'?"),
        (
            {"extras": {}},
            "extras: unknown section (expected one of: repository, timing, "
            "application, health, rollout, environment, scripts, watchdog, test)",
        ),
        (
            {"environment": {"A": "1"}},
            "environment: unknown section; in JSON, environment goes inside application",
        ),
        (
            {"repository": {"local pth": "/x"}},
            "repository.local pth: unknown key; did you mean 'local path'?",
        ),
        (
            {"repository": {"local_paht": "/x"}},
            "repository.local_paht: unknown key; did you mean 'local path'?",
        ),
        (
            {"health": {"colour": "red"}},
            "health.colour: unknown key (expected one of: type, host, "
            "port, path, status, send, expect, interval, timeout, retries, grace)",
        ),
        (
            {"timing": {"minimum": True}},
            "timing.minimum: expected a number of seconds, got a boolean",
        ),
        (
            {"timing": {"maximum": "20"}},
            "timing.maximum: expected a number of seconds, got a string",
        ),
        ({"timing": {"minimum": 0}}, "timing.minimum: must be greater than 0, got 0"),
        ({"timing": {"minimum": -1}}, "timing.minimum: must be greater than 0, got -1"),
        (
            {"timing": {"minimum": 30, "maximum": 20}},
            "timing.minimum: must not be greater than maximum (20), got 30",
        ),
        ({"application": {"start": ""}}, "application.start: empty command"),
        ({"application": {"start": []}}, "application.start: expected a non-empty list of strings"),
        (
            {"application": {"start": ["a", 1]}},
            "application.start: expected a non-empty list of strings",
        ),
        (
            {"application": {"start": 5}},
            "application.start: expected a command string or a list of strings, got a number",
        ),
        (
            {"application": {"start": "app 'x"}},
            "application.start: cannot split command: No closing quotation",
        ),
        (
            {"application": {"stop timeout": -1}},
            "application.stop timeout: must be at least 0, got -1",
        ),
        (
            {"application": {"environment": {"A": 1}}},
            "application.environment.A: expected a string, got a number",
        ),
        (
            {"application": {"environment": ["A=1"]}},
            "application.environment: expected an object of strings, got a list",
        ),
        (
            {"health": {"type": "tcp"}},
            "health.type: unknown health type 'tcp'; expected http, socket or none",
        ),
        (
            {"health": {"type": "http"}},
            "health.port: required key is missing (health.type is http)",
        ),
        (
            {"health": {"type": "socket"}},
            "health.port: required key is missing (health.type is socket)",
        ),
        ({"health": {"port": 0}}, "health.port: must be between 1 and 65535, got 0"),
        ({"health": {"port": 65536}}, "health.port: must be between 1 and 65535, got 65536"),
        ({"health": {"port": 80.0}}, "health.port: expected a whole number, got 80.0"),
        ({"health": {"port": "80"}}, "health.port: expected a whole number, got a string"),
        ({"health": {"port": False}}, "health.port: expected a whole number, got a boolean"),
        ({"health": {"timeout": 0}}, "health.timeout: must be greater than 0, got 0"),
        ({"health": {"interval": -2}}, "health.interval: must be greater than 0, got -2"),
        ({"health": {"grace": -1}}, "health.grace: must be at least 0, got -1"),
        ({"health": {"retries": 0}}, "health.retries: must be at least 1, got 0"),
        ({"health": {"retries": 1.5}}, "health.retries: expected a whole number, got 1.5"),
        ({"health": {"path": "healthz"}}, "health.path: must start with '/', got 'healthz'"),
        (
            {"health": {"status": "2xx"}},
            "health.status: expected status codes like 200, 200-399 or 200,204, got '2xx'",
        ),
        (
            {"health": {"status": "399-200"}},
            "health.status: '399-200' is not a range of HTTP status codes (100-599, low to high)",
        ),
        ({"health": {"status": []}}, "health.status: must not be empty"),
        (
            {"health": {"type": "http", "port": 80, "send": "x"}},
            "health.send: only used by socket checks, and health.type is http",
        ),
        (
            {"health": {"type": "socket", "port": 80, "path": "/x"}},
            "health.path: only used by http checks, and health.type is socket",
        ),
        ({"health": {"host": ""}}, "health.host: must not be empty"),
        ({"repository": {"local path": None}}, "repository.local path: required key is missing"),
        ({"repository": {"local path": ""}}, "repository.local path: must not be empty"),
        (
            {"repository": {"local path": "/"}},
            "repository.local path: must not be the file system root",
        ),
        (
            {"repository": {"local path": 3}},
            "repository.local path: expected a string, got a number",
        ),
        (
            {"repository": {"type": "svn"}},
            "repository.type: only 'git' repositories are supported, got 'svn'",
        ),
        (
            {"repository": {"remote path": "--upload-pack=touch /tmp/x"}},
            "repository.remote path: '--upload-pack=touch /tmp/x' starts with '-', git would read "
            "it as an option",
        ),
        (
            {"repository": {"branch": "-f"}},
            "repository.branch: '-f' starts with '-', git would read it as an option",
        ),
        ({"repository": {"branch": "HEAD"}}, "repository.branch: 'HEAD' is not a branch name"),
        (
            {"repository": {"branch": "a..b"}},
            "repository.branch: 'a..b' contains '..', which git does not allow in ref names",
        ),
        (
            {"repository": {"remote": "--mirror"}},
            "repository.remote: '--mirror' starts with '-', git would read it as an option",
        ),
        (
            {"repository": {"remote": "my remote"}},
            "repository.remote: 'my remote' contains ' ', which git does not allow in ref names",
        ),
        ({"repository": {"branch": "main\u0000"}}, "repository.branch: contains a NUL byte"),
        ({"application": {"start": ["app", "\u0000"]}}, "application.start: contains a NUL byte"),
        ({"repository": "/srv/app"}, "repository: expected an object, got a string"),
    ],
)
def test_one_mistake_one_exact_line(tmp_path, sections, line):
    path = write_json(tmp_path, sections)
    assert problems(path) == [f"{path}: {line}"]


def test_null_is_a_wrong_type_not_a_missing_key(tmp_path):
    path = write(
        tmp_path, "n.json", '{"repository": {"local path": "/x"}, "application": {"start": null}}'
    )
    assert problems(path) == [
        f"{path}: application.start: expected a command string or a list of strings, got null"
    ]


def test_missing_sections_are_missing_required_keys(tmp_path):
    path = write(tmp_path, "empty.json", "{}")
    # no [application] is a file-sync app; [repository] is what every config needs
    assert problems(path) == [f"{path}: repository.local path: required key is missing"]


def test_every_problem_in_a_file_is_reported(tmp_path):
    path = write(
        tmp_path,
        "many.ini",
        """\
        [repository]
        local_pth = /x
        branch = -x
        [timing]
        minimum = soon
        maximum = 0
        [application]
        start =
        stop timeout = -1
        [scripts]
        post-pull = a, 'b
        [health]
        type = tcp
        port = http
        retries = 0
        send = \\q
        """,
    )
    assert problems(path) == [
        f"{path}: {line}"
        for line in [
            "repository.local_pth: unknown key; did you mean 'local path'?",
            "repository.local path: required key is missing",
            "repository.branch: '-x' starts with '-', git would read it as an option",
            "timing.minimum: expected a number of seconds, got 'soon'",
            "timing.maximum: must be greater than 0, got 0",
            "application.start: empty command",
            "application.stop timeout: must be at least 0, got -1",
            "scripts.post-pull[2]: cannot split command: No closing quotation",
            "health.type: unknown health type 'tcp'; expected http, socket or none",
            "health.port: expected a whole number, got 'http'",
            "health.retries: must be at least 1, got 0",
            "health.send: unknown escape '\\q' (use \\r \\n \\t \\0 \\\\ or \\xHH)",
        ]
    ]


@pytest.mark.parametrize(
    "text, line",
    [
        (
            "[repository]\nlocal path = /x\n[application]\nstart = a\n[health]\ntype = http\n",
            "health.port: required key is missing (health.type is http)",
        ),
        (
            "[repository]\nlocal path = /x\n[application]\nstart = a\napplication = x\n",
            "application.application: unknown key (expected one of: start, executable, install, "
            "install timeout, stop timeout, environment)",
        ),
        (
            "[repository]\nlocal path = /x\n[application]\nstart = a\nenvironment = A=1\n",
            "application.environment: in an INI file, write the variables in an [environment] "
            "section",
        ),
        (
            "[repository]\nlocal path = /x\nlocal_path = /y\n[application]\nstart = a\n",
            "repository.local path: given twice (as 'local path' and 'local_path')",
        ),
        (
            "[repository]\nlocal path = /x\n[application]\nstart = a\n[timing]\nminimum = nan\n",
            "timing.minimum: expected a finite number, got nan",
        ),
        (
            "[repository]\nlocal path = /x\n[application]\nstart = a\n[health]\nport = 8o\n",
            "health.port: expected a whole number, got '8o'",
        ),
    ],
)
def test_ini_mistakes(tmp_path, text, line):
    path = write(tmp_path, "app.ini", text)
    assert problems(path) == [f"{path}: {line}"]


@pytest.mark.parametrize(
    "name, text, reason",
    [
        (
            "a.json",
            '{"repository": {"local path": "/x"},\n "application": {"start": "a"}\n',
            "malformed JSON at line 3, column 1: Expecting ',' delimiter",
        ),
        ("a.json", "[1, 2]", "expected a JSON object at the top, got a list"),
        ("a.json", '"text"', "expected a JSON object at the top, got a string"),
        ("a.json", "", "malformed JSON at line 1, column 1: Expecting value"),
        ("a.ini", "local path = /x\n", "malformed INI at line 1: text before the first [section]"),
        (
            "a.ini",
            "[repository]\nlocal path = /x\njust words\n",
            "malformed INI at line 3: expected 'key = value' or '[section]', got 'just words'",
        ),
        (
            "a.ini",
            "[repository]\nbranch = a\nbranch = b\n",
            "malformed INI at line 3: key 'branch' given twice in [repository]",
        ),
        (
            "a.ini",
            "[timing]\n[repository]\n[timing]\n",
            "malformed INI at line 3: section [timing] given twice",
        ),
        ("a.ini", "[repository]\nlocal path = /x\x00\n", "contains a NUL byte (line 2)"),
    ],
)
def test_whole_file_mistakes(tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert problems(path) == [f"{path}: -: {reason}"]


def test_json_keys_given_twice(tmp_path):
    path = write(
        tmp_path,
        "d.json",
        '{"repository": {"local path": "/a", "local path": "/b"},'
        ' "application": {"start": "a"}, "application": {}}',
    )
    assert problems(path)[:2] == [
        f"{path}: application: section given twice",
        f"{path}: repository.local path: key given twice",
    ]


def test_unreadable_and_undecodable_files(tmp_path):
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert problems(folder) == [f"{folder}: -: cannot read: Is a directory"]
    latin = tmp_path / "latin.ini"
    latin.write_bytes(b"[repository]\nlocal path = /caf\xe9\n")
    assert problems(latin) == [f"{latin}: -: not UTF-8 text (byte 30)"]


def test_a_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "bom.ini"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL_INI.encode())
    assert load_file(path).repository.local_path == Path("/srv/app")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("main", None),
        ("feature/x-1", None),
        ("v1.2", None),
        ("a@b", None),
        ("", "must not be empty"),
        ("-x", "'-x' starts with '-', git would read it as an option"),
        ("a b", "'a b' contains ' ', which git does not allow in ref names"),
        ("a~1", "'a~1' contains '~', which git does not allow in ref names"),
        ("a^", "'a^' contains '^', which git does not allow in ref names"),
        ("a:b", "'a:b' contains ':', which git does not allow in ref names"),
        ("a?", "'a?' contains '?', which git does not allow in ref names"),
        ("a*", "'a*' contains '*', which git does not allow in ref names"),
        ("a[1", "'a[1' contains '[', which git does not allow in ref names"),
        ("a\\b", "'a\\\\b' contains '\\\\', which git does not allow in ref names"),
        ("a\tb", "'a\\tb' contains a control character"),
        ("a\x7fb", "'a\\x7fb' contains a control character"),
        ("a..b", "'a..b' contains '..', which git does not allow in ref names"),
        ("a@{1}", "'a@{1}' contains '@{', which git does not allow in ref names"),
        ("a//b", "'a//b' contains '//', which git does not allow in ref names"),
        ("@", "'@' is not a valid git ref name"),
        ("/a", "'/a' is not a valid git ref name"),
        ("a/", "'a/' is not a valid git ref name"),
        ("a.", "'a.' is not a valid git ref name"),
        ("a/.b", "'a/.b' has a part starting with '.' or ending with '.lock'"),
        (".a", "'.a' has a part starting with '.' or ending with '.lock'"),
        ("a.lock/b", "'a.lock/b' has a part starting with '.' or ending with '.lock'"),
    ],
)
def test_ref_name_rules(name, reason):
    assert ref_name_problem(name) == reason


# -- the original huddle (0.1.5) --------------------------------------------------------------


def test_original_huddle_files_load_unchanged():
    configs, errors = load_paths([CONFIGS / "original"])
    assert errors == []
    by_name = {c.name: c for c in configs}
    assert sorted(by_name) == ["demo_win32", "dummy", "sync_reboot"]  # _sample skipped

    dummy = by_name["dummy"]
    assert dummy.repository == RepositoryConfig(
        Path("/home/ubuntu/git_example"),
        "origin",
        "https://github.com/slightlynybbled/dummy.git",
        "develop",
        "/usr/bin/git",
    )
    assert dummy.timing == TimingConfig(60.0, 600.0)
    assert dummy.scripts.pre_pull == (
        ("/bin/sh", "-c", "/bin/ls /home/ubuntu/ > /home/ubuntu/values.txt"),
        ("/bin/ls", "/etc/"),
    )
    assert dummy.scripts.post_pull == (("sudo", "reboot"),)
    assert dummy.health == HealthConfig(
        type="socket", host="127.0.0.1", port=8888, send=b"watchdog", expect=b"OK", interval_s=60.0
    )

    win = by_name["demo_win32"]
    assert win.timing == TimingConfig(10.0, 20.0)  # only a minimum: our maximum applies
    assert win.repository.executable == "C:/Program Files/Git/bin/git.exe"
    assert win.health == HealthConfig()

    sync = by_name["sync_reboot"]
    assert sync.scripts.pre_pull == (("ls", "-a"), ("mkdir", "mydir"))
    assert sync.scripts.post_pull == (("/sbin/reboot",),)
    assert sync.health == HealthConfig(
        type="http", host="localhost", port=5000, path="/ping", interval_s=10.0
    )


def test_the_originals_own_sample_is_skipped_but_its_executable_is_the_command():
    # `_` names are skipped in a directory; named alone, it loads: its application.executable
    # ("python -m dummy_app.py", with no start) is the whole command
    sample = load_file(CONFIGS / "original" / "_sample_config.json")
    assert sample.application.start == ("python", "-m", "dummy_app.py")


@pytest.mark.parametrize(
    "watchdog, health",
    [
        (
            {"host": "http://localhost:8080/ping"},
            HealthConfig(type="http", host="localhost", port=8080, path="/ping"),
        ),
        (
            {"host": "http://10.0.0.2", "port": 5000},
            HealthConfig(type="http", host="10.0.0.2", port=5000, path="/"),
        ),
        (
            {"host": "http://h/status?full=1", "period": "2.5"},
            HealthConfig(type="http", host="h", port=80, path="/status?full=1", interval_s=2.5),
        ),
        (
            {"host": "http://h:81", "port": "81", "request": "x", "response": "y"},
            HealthConfig(type="http", host="h", port=81),
        ),  # the original ignored both for http
        ({"host": "10.0.0.3"}, HealthConfig(type="socket", host="10.0.0.3", port=80)),
        (
            {"port": 7, "request": "ping", "response": "pong"},
            HealthConfig(type="socket", host="127.0.0.1", port=7, send=b"ping", expect=b"pong"),
        ),
    ],
)
def test_watchdog_maps_onto_health(tmp_path, watchdog, health):
    assert load_file(write_json(tmp_path, {"watchdog": watchdog})).health == health


@pytest.mark.parametrize(
    "sections, line",
    [
        (
            {"watchdog": {"host": "https://h/ping"}},
            "watchdog.host: https is not supported by health checks, got 'https://h/ping'",
        ),
        (
            {"watchdog": {"host": "http//h"}},
            "watchdog.host: expected an http:// URL such as http://localhost:8080/ping, "
            "got 'http//h'",
        ),
        (
            {"watchdog": {"host": "http://h:1/", "port": 2}},
            "watchdog.port: 2 conflicts with the port in watchdog.host (1)",
        ),
        ({"watchdog": {"port": "eighty"}}, "watchdog.port: expected a whole number, got 'eighty'"),
        ({"watchdog": {"period": 0}}, "watchdog.period: must be greater than 0, got 0"),
        (
            {"watchdog": {}, "health": {}},
            "watchdog: use either [health] or the original [watchdog] section, not both",
        ),
        (
            {"test": {"remote": "http://ci"}},
            "test.remote: the original huddle's [test] section "
            "was never implemented; leave it empty or remove it",
        ),
        ({"scripts": {"pre-pull": "ls"}}, None),
        (
            {"scripts": {"pre-pull": [["ls", "-a"], 3]}},
            "scripts.pre-pull[2]: expected a command string or a list of strings, got a number",
        ),
        (
            {"scripts": {"post_pull": {"a": 1}}},
            "scripts.post-pull: expected a list of commands, got an object",
        ),
    ],
)
def test_original_forms_mistakes(tmp_path, sections, line):
    path = write_json(tmp_path, sections)
    if line is None:
        assert load_file(path).scripts.pre_pull == (("ls",),)
    else:
        assert problems(path) == [f"{path}: {line}"]


def test_an_empty_reserved_test_section_is_accepted(tmp_path):
    path = write(tmp_path, "t.ini", MINIMAL_INI + "[test]\nremote =\npass response =\n")
    assert load_file(path).name == "t"


def test_legacy_command_line_means_run():
    assert translate_legacy(["-c", "/etc/huddle"]) == ["run", "/etc/huddle"]
    assert translate_legacy(["-c", "cfg", "-d"]) == ["run", "cfg", "--log-level", "debug"]
    assert translate_legacy(["check", "cfg"]) == ["check", "cfg"]


# -- load_paths -------------------------------------------------------------------------------


def test_directories_expand_sorted_skipping_underscore_and_hidden(tmp_path):
    for name in ("b.ini", "a.json", "_off.json", ".hidden.json", "notes.txt", "C.JSON"):
        body = MINIMAL_INI if name.lower().endswith(".ini") else json.dumps(MINIMAL)
        write(tmp_path, name, body.replace("/srv/app", f"/srv/{name}"))
    (tmp_path / "sub.json").mkdir()  # a directory is not a config
    configs, errors = load_paths([tmp_path])
    assert errors == []
    assert [c.name for c in configs] == ["C", "a", "b"]
    assert [c.source for c in configs] == [
        tmp_path / "C.JSON",
        tmp_path / "a.json",
        tmp_path / "b.ini",
    ]


def test_an_explicit_underscore_file_is_loaded(tmp_path):
    path = write(tmp_path, "_draft.json", json.dumps(MINIMAL))
    configs, errors = load_paths([path])
    assert ([c.name for c in configs], errors) == (["_draft"], [])


def test_path_problems(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_skipped = tmp_path / "skipped"
    write(only_skipped, "_x.json", json.dumps(MINIMAL))
    text = write(tmp_path, "readme.txt", "hi")
    configs, errors = load_paths([tmp_path / "nope", empty, only_skipped, text])
    assert configs == []
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'nope'}: -: no such file or directory",
        f"{empty}: -: no .json or .ini app configs in this directory "
        "(names starting with _ are skipped)",
        f"{only_skipped}: -: no .json or .ini app configs in this directory "
        "(names starting with _ are skipped)",
        f"{text}: -: not a .json or .ini file",
    ]


def test_two_apps_with_one_name_keep_the_first(tmp_path):
    write(tmp_path, "web.ini", MINIMAL_INI.replace("/srv/app", "/srv/one"))
    write(tmp_path, "web.json", json.dumps(MINIMAL))
    configs, errors = load_paths([tmp_path])
    assert [c.source for c in configs] == [tmp_path / "web.ini"]
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'web.json'}: -: app name 'web' is already used by {tmp_path / 'web.ini'}"
    ]


def test_two_apps_with_one_working_tree_keep_the_first(tmp_path):
    write(tmp_path, "a.json", json.dumps(MINIMAL))
    write(tmp_path, "b.ini", MINIMAL_INI.replace("/srv/app", "/srv/x/../app/"))
    configs, errors = load_paths([tmp_path])
    assert [c.name for c in configs] == ["a"]
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'b.ini'}: repository.local path: '/srv/app' is already the working tree "
        f"of app 'a' ({tmp_path / 'a.json'}); each app needs its own"
    ]


def test_one_file_named_twice_is_loaded_once(tmp_path):
    path = write(tmp_path, "a.json", json.dumps(MINIMAL))
    configs, errors = load_paths([path, tmp_path, tmp_path / "." / "a.json"])
    assert ([c.name for c in configs], errors) == (["a"], [])


def test_problems_come_in_argument_order_and_good_files_still_load(tmp_path):
    bad = write(tmp_path, "z" / Path("bad.json"), "{")
    good = write(tmp_path, "good.json", json.dumps(MINIMAL))
    configs, errors = load_paths([bad, tmp_path / "missing.ini", good])
    assert [c.name for c in configs] == ["good"]
    assert [str(e) for e in errors] == [
        f"{bad}: -: malformed JSON at line 1, column 2: Expecting property name enclosed in "
        "double quotes",
        f"{tmp_path / 'missing.ini'}: -: no such file or directory",
    ]
