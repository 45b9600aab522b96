"""Config: YAML -> frozen models, every problem reported with its key path, secrets from env/files."""

import subprocess
import sys

import pydantic
import pytest

from gw import ROOT, registry
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config, warnings_for

GOOD = """
gateway: {listen: "127.0.0.1:50051", metrics: "127.0.0.1:9108", journal: {max_bytes: 64MiB}}
auth:
  tokens:
    - {name: command-centre, token_env: TW_TEST_TOKEN, read: ["#"], control: ["test/+"]}
devices:
  - {id: gen-1, driver: testgen, rate_hz: 5}
  - {id: gen-2, driver: testgen, channels: [a, b]}
"""


def problems(text, monkeypatch=None):
    with pytest.raises(ConfigError) as err:
        load_config(text, registry())
    return dict(err.value.problems)


def test_good_config_is_frozen_and_typed(monkeypatch):
    monkeypatch.setenv("TW_TEST_TOKEN", "s3cret-value")
    cfg = load_config(GOOD, registry())
    assert cfg.gateway.journal.max_bytes == 64 * 1024 * 1024
    assert [d.id for d in cfg.devices] == ["gen-1", "gen-2"]
    assert cfg.devices[1].channels == ("a", "b")
    assert cfg.auth.tokens[0].token.get_secret_value() == "s3cret-value"
    assert "s3cret" not in repr(cfg)  # secrets never print
    with pytest.raises(pydantic.ValidationError):  # frozen
        cfg.devices[0].rate_hz = 1.0
    assert warnings_for(cfg) == []


def test_every_problem_is_reported_with_its_path(monkeypatch):
    monkeypatch.delenv("TW_MISSING", raising=False)
    text = """
gateway: {listen: "nowhere", journal: {max_bytes: 10}, colour: blue}
auth:
  tokens:
    - {name: a, token_env: TW_MISSING, read: ["a//b"]}
    - {name: b, read: ["#"]}
devices:
  - {id: gen-1, driver: testgen, rate_hz: -1}
  - {id: gen-1, driver: testgen}
  - {id: "bad/id", driver: testgen}
  - {id: x, driver: nosuch}
  - {id: y}
  - {id: z, driver: testgen, unknown_key: 1}
"""
    p = problems(text)
    assert p["gateway.listen"].startswith("expected HOST:PORT")
    assert "at least 64KiB" in p["gateway.journal.max_bytes"]
    assert p["gateway.colour"] == "unknown key"
    assert p["auth.tokens[0].token_env"] == "environment variable TW_MISSING is not set or empty"
    assert "empty level" in p["auth.tokens[0].read"]
    assert p["auth.tokens[1].token"].startswith("required")
    assert "greater than or equal to 0" in p["devices[0].rate_hz"]
    assert p["devices[1].id"] == "duplicate id 'gen-1' (also devices[0])"
    assert "must be 1-64" in p["devices[2].id"]
    assert p["devices[3].driver"].startswith("unknown driver 'nosuch'")
    assert p["devices[4].driver"] == "required"
    assert p["devices[5].unknown_key"] == "unknown key"


def test_secrets_from_files_and_conflicts(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    cfg = load_config({"auth": {"tokens": [{"name": "t", "token_file": str(secret), "read": ["#"]}]}}, registry())
    assert cfg.auth.tokens[0].token.get_secret_value() == "from-a-file"
    p = problems({"auth": {"tokens": [{"name": "t", "token_file": str(tmp_path / "nope"), "read": ["#"]}]}})
    assert p["auth.tokens[0].token_file"].startswith("cannot read")
    monkeypatch.setenv("TW_T", "x")
    p = problems({"auth": {"tokens": [{"name": "t", "token": "a", "token_env": "TW_T"}]}})
    assert "give only one of token, token_env" in p["auth.tokens[0].token_env"]
    p = problems(
        {
            "auth": {
                "allow_inline_secrets": True,
                "tokens": [{"name": "t", "token": "same"}, {"name": "u", "token": "same"}],
            }
        }
    )
    assert p["auth.tokens[1].token"] == "same token value as tokens[0]"


def test_inline_secrets_are_errors_unless_the_file_opts_out():
    text = {
        "gateway": {"listen": "0.0.0.0:50051"},
        "auth": {"tokens": [{"name": "t", "token": "inline", "read": ["#"]}]},
    }
    with pytest.raises(ConfigError) as err:
        load_config(text, registry())
    assert err.value.problems == [
        (
            "auth.tokens[0].token",
            "secret written inline: use token_env or token_file (or set auth.allow_inline_secrets: true if this "
            "file is kept as safe as the secret)",
        )
    ]
    # the config's other warnings come with the error, so check shows everything in one run
    assert ("gateway.tls", "listening on 0.0.0.0 without TLS: tokens cross the network in clear") in err.value.warnings
    text["auth"]["allow_inline_secrets"] = True
    cfg = load_config(text, registry())
    assert cfg.auth.tokens[0].token.get_secret_value() == "inline"
    w = dict(warnings_for(cfg))
    assert "auth.tokens[0].token" not in w  # chosen explicitly: nothing more to say
    assert "without TLS" in w["gateway.tls"]
    # only a real boolean true opts out
    text["auth"]["allow_inline_secrets"] = "yes please"
    assert "auth.allow_inline_secrets" in problems(text) and "auth.tokens[0].token" in problems(text)


def test_every_inline_secret_is_reported_with_the_other_problems_in_one_run(monkeypatch):
    monkeypatch.setenv("TW_TEST_TOKEN", "s3cret-value")
    from tianwang.gateway.lifecycle.registry import default_registry

    p = {}
    with pytest.raises(ConfigError) as err:
        load_config(
            {
                "gateway": {"metrics_auth": {"token": "m"}, "journal": {"max_bytes": -1}},
                "bridges": {
                    "nats": {"servers": ["nats://127.0.0.1:4222"], "stream": "S", "password": "pw", "user": "u"}
                },
                "auth": {
                    "tokens": [{"name": "a", "token": "x", "read": ["#"]}, {"name": "a", "token_env": "TW_TEST_TOKEN"}]
                },
                "devices": [
                    {
                        "id": "cam-1",
                        "driver": "onvif",
                        "url": "http://127.0.0.1:8080/onvif/device_service",
                        "user": "tw",
                        "password": "pw",
                        "bogus": 1,
                    }
                ],
                "listeners": [{"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret": "s"}],
            },
            default_registry(),
        )
    p = dict(err.value.problems)
    for path in (
        "gateway.metrics_auth.token",
        "bridges.nats.password",
        "auth.tokens[0].token",
        "devices[0].password",
        "listeners[0].auth_secret",
    ):
        assert p[path].startswith("secret written inline: use "), path
    assert p["devices[0].password"].startswith("secret written inline: use password_env or password_file")
    # and beside them, the field errors and the duplicate name
    assert "devices[0].bogus" in p and "gateway.journal.max_bytes" in p
    assert p["auth.tokens[1].name"] == "duplicate token name 'a' (also tokens[0])"


def test_yaml_syntax_errors_and_non_mappings():
    p = problems("gateway: {listen: [unclosed")
    assert p[""].startswith("YAML syntax: line 1")
    assert problems("- just\n- a list\n")[""].startswith("the config must be a mapping")
    assert problems({"devices": "nope"})["devices"] == "must be a list"


def _cli(*args, env_extra=None):
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "tests" / "plugins")
    env["TIANWANG_DRIVER_MODULES"] = "tw_testgen"
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "tianwang", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


def test_check_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gateway: {listen: nowhere}\ndevices:\n  - {id: a, driver: testgen, rate_hz: x}\n  - {id: b, driver: nosuch}\n"
    )
    r = _cli("check", str(bad))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert "gateway.listen: expected HOST:PORT, got 'nowhere'" in lines
    assert any(line.startswith("devices[0] (a).rate_hz: ") for line in lines)
    assert any(line.startswith("devices[1] (b).driver: unknown driver 'nosuch'") for line in lines)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    r = _cli("check", str(good), env_extra={"TW_TEST_TOKEN": "x"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (2 devices, 0 listeners, 1 tokens)" in r.stdout
    r = _cli("check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "no such file" in r.stdout


def test_check_prints_errors_and_warnings_in_one_run(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(
        "gateway: {listen: '0.0.0.0:50051'}\n"
        "auth: {tokens: [{name: cc, token: written-here, read: ['#']}]}\n"
        "devices:\n  - {id: a, driver: testgen, rate_hz: x}\n"
    )
    r = _cli("check", str(path))
    assert r.returncode == 1
    assert sorted(r.stdout.splitlines()) == [
        "auth.tokens[0].token: secret written inline: use token_env or token_file (or set "
        "auth.allow_inline_secrets: true if this file is kept as safe as the secret)",
        "devices[0] (a).rate_hz: Input should be a valid number, unable to parse string as a number",
    ]
    assert r.stderr.splitlines() == [
        "warning: gateway.tls: listening on 0.0.0.0 without TLS: tokens cross the network in clear"
    ]


def test_check_catches_what_would_fail_at_run_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TW_T1", "token-one-0123456789")
    monkeypatch.setenv("TW_T2", "token-two-0123456789")
    monkeypatch.setenv("TW_SECRET", "jt808-secret-0123456789")
    path = tmp_path / "gw.yaml"
    path.write_text(
        """
gateway: {listen: "127.0.0.1:7000", metrics: off}
auth: {tokens: [{name: a, token_env: TW_T1, read: ["#"]}, {name: a, token_env: TW_T2, read: ["#"]}]}
devices:
  - {id: g1, driver: beidou, url: "tcp://127.0.0.1:1", backoff: {initial_s: 10, max_s: 1}}
listeners:
  - {id: f1, driver: jt808, listen: "127.0.0.1:7001", auth_secret_env: TW_SECRET}
  - {id: f2, driver: jt808, listen: "127.0.0.1:7001", auth_secret_env: TW_SECRET}
  - {id: f3, driver: jt808, listen: "127.0.0.1:7000", auth_secret_env: TW_SECRET}
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    problems = dict(err.value.problems)
    assert problems["auth.tokens[1].name"] == "duplicate token name 'a' (also tokens[0])"  # formatted, not a template
    assert problems["devices[0].backoff"] == "max_s (1) is below initial_s (10)"
    assert "127.0.0.1:7001 is also listeners[0]'s address" in problems["listeners[1].listen"]
    assert "127.0.0.1:7000 is also gateway.listen's address" in problems["listeners[2].listen"]
    assert len(problems) == 4  # every problem in one run


def test_metrics_off_in_the_file_and_an_empty_file(tmp_path):
    path = tmp_path / "gw.yaml"
    for text in ("off", "'off'", "null", "false"):
        path.write_text(f"gateway: {{metrics: {text}}}\n")
        assert load_config(str(path)).gateway.metrics is None
    path.write_text("")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "the config is empty" in err.value.problems[0][1]


def test_a_duplicate_token_name_is_reported_beside_field_errors(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(
        'auth: {tokens: [{name: a, token_env: NOPE_NOT_SET_42, read: ["#"]}, {name: a, token: x, read: [bad/#/x]}]}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    problems = dict(err.value.problems)
    assert problems["auth.tokens[1].name"] == "duplicate token name 'a' (also tokens[0])"
    assert "NOPE_NOT_SET_42" in problems["auth.tokens[0].token_env"]
    assert "'#' must be the last level" in problems["auth.tokens[1].read"]


def test_check_warns_on_token_patterns_that_match_no_device(tmp_path):
    """Issue 20 item 9: a `read` or `control` pattern that can match no configured device is a
    warning naming the closest one that would (the gateway would refuse the calls and say nothing)."""
    text = """
auth:
  allow_inline_secrets: true
  anonymous_read: ["gen-1/#"]
  tokens:
    - name: ok
      token: token-ok-0123456789
      read: ["#", "test/+/reading", "audit/gen-1/#", "gnss/+/fix", "gnss/013800138000/#"]
      control: ["test/+", "test/gen-2", "gnss/#"]
    - name: slips
      token: token-slip-0123456789
      read: ["tset/gen-1/#", "test/+", "test/gen-9/#"]
      control: ["gen-1", "test/gen-1/reading", "signal/+"]
devices:
  - {id: gen-1, driver: testgen}
  - {id: gen-2, driver: testgen}
listeners:
  - {id: fleet, driver: jt808, listen: "127.0.0.1:0", registration: closed}
"""
    from tianwang.drivers import jt808

    reg = registry(jt808.SPEC)
    cfg = load_config(text, reg)
    warned = {path: why for path, why in warnings_for(cfg, reg) if path.startswith("auth.")}
    assert sorted(warned) == [
        "auth.anonymous_read[0]",
        "auth.tokens[1].control[0]",
        "auth.tokens[1].control[1]",
        "auth.tokens[1].control[2]",
        "auth.tokens[1].read[0]",
        "auth.tokens[1].read[1]",
        "auth.tokens[1].read[2]",
    ]
    assert "'gen-1' matches no configured device" in warned["auth.tokens[1].control[0]"]
    assert "did you mean 'test/gen-1'?" in warned["auth.tokens[1].control[0]"]
    assert "did you mean 'test/gen-1'?" in warned["auth.tokens[1].control[1]"]
    assert "did you mean 'test/gen-1/#'?" in warned["auth.tokens[1].read[0]"]
    assert "three levels" in warned["auth.tokens[1].read[1]"]
    assert "did you mean 'test/gen-1/#'?" in warned["auth.anonymous_read[0]"]
    # through the CLI, one line each
    path = tmp_path / "gw.yaml"
    path.write_text(
        text.replace(
            '{id: fleet, driver: jt808, listen: "127.0.0.1:0", registration: closed}',
            '{id: fleet, driver: jt808, listen: "127.0.0.1:0", registration: closed, '
            "registrations_file: " + str(tmp_path / "reg.json") + "}",
        )
    )
    r = _cli("check", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: auth.tokens[1].control[0]: 'gen-1' matches no configured device" in r.stderr
    assert r.stderr.count("matches no") == 7
