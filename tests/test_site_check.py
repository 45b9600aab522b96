"""`check` (and a reload) refuse what `run` could not run: paths the gateway cannot use, devices that
cannot share their link, two things on one address; sharding keeps a link's devices together; a
problem names its entry by id and suggests the key or driver meant."""

import zlib

import pytest
import yaml

from tianwang.gateway.cli.main import main
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import for_shard, load_config, shard_of

pytestmark = pytest.mark.timeout(60)

AUTH = {"allow_inline_secrets": True, "tokens": [{"name": "ops", "token": "ops-token-0123456789", "read": ["#"]}]}


def cfg(devices=(), listeners=(), **gateway):
    gw = {"listen": "127.0.0.1:50051", "metrics": "127.0.0.1:9108"}
    gw.update(gateway)
    return {"gateway": gw, "auth": AUTH, "devices": list(devices), "listeners": list(listeners)}


def problems(data):
    with pytest.raises(ConfigError) as err:
        load_config(data)
    return dict(err.value.problems), err.value


def tsc(dev_id, url="serial:///dev/ttyS1?baudrate=9600", **keys):
    return {"id": dev_id, "driver": "signal", "url": url, **keys}


def fleet(**keys):
    return {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:7808", "auth_secret": "s3cret-s3cret", **keys}


# -- 1. paths -----------------------------------------------------------------------------------
def test_a_registrations_file_in_a_missing_directory_is_refused(tmp_path):
    missing = tmp_path / "no-such-dir" / "fleet.registrations"
    p, _ = problems(cfg(listeners=[fleet(registrations_file=str(missing))]))
    assert "does not exist" in p["listeners[0].registrations_file"]
    # in an existing directory it is fine (the file itself is created by the gateway)
    load_config(cfg(listeners=[fleet(registrations_file=str(tmp_path / "fleet.registrations"))]))


def test_gb28181_files_are_checked_for_what_the_listener_does_with_them(tmp_path):
    gb = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:5060",
        "server_id": "43030000002000000001",
        "registration": "open",
        "password": "gb-open-pass",
    }
    missing = tmp_path / "no-such-dir"
    p, _ = problems(cfg(listeners=[{**gb, "registrations_file": str(missing / "gb.registrations")}]))
    assert "does not exist" in p["listeners[0].registrations_file"]
    p, _ = problems(cfg(listeners=[{**gb, "devices_file": str(missing / "gb-devices.yaml")}]))
    assert "no such file" in p["listeners[0].devices_file"]
    load_config(cfg(listeners=[{**gb, "registrations_file": str(tmp_path / "gb.registrations")}]))


def test_journal_and_tls_paths_are_checked_for_what_the_gateway_does_with_them(tmp_path):
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    data = cfg(
        journal={"path": str(a_file / "journal")},
        tls={"cert_file": str(tmp_path), "key_file": str(tmp_path / "missing.key")},
    )
    p, _ = problems(data)
    assert "is not a directory" in p["gateway.journal.path"]
    assert "is a directory, not a file" in p["gateway.tls.cert_file"]
    assert "missing.key" in p["gateway.tls.key_file"]
    # a journal directory that does not exist yet is created under a writable parent
    load_config(cfg(journal={"path": str(tmp_path / "j" / "k")}))


# -- 2. devices sharing a link ------------------------------------------------------------------
def test_two_controllers_with_one_id_on_one_line_are_refused():
    p, _ = problems(cfg([tsc("tsc-17", controller_id=17), tsc("tsc-18", controller_id=17)]))
    assert p["devices[1].controller_id"] == "controller 17 is already 'tsc-17' on the same link"


def test_mixed_profiles_and_missing_ids_on_one_line_are_refused():
    p, _ = problems(cfg([tsc("a", controller_id=1), tsc("b", controller_id=2, profile="ccitt"), tsc("c")]))
    assert "'ccitt' differs from 'majority'" in p["devices[1].profile"]
    assert "each needs its controller_id" in p["devices[2].controller_id"]


def test_a_non_signal_device_on_a_signal_line_is_refused():
    gps = {"id": "bd-1", "driver": "beidou", "url": "serial:///dev/ttyS1?baudrate=9600"}
    p, _ = problems(cfg([tsc("tsc-17", controller_id=17), gps]))
    assert "is already 'tsc-17'" in p["devices[1].url"] and "driver signal" in p["devices[1].url"]


def test_one_port_under_two_names_is_one_line(tmp_path):
    port = tmp_path / "ttyS1"
    port.write_text("")
    alias = tmp_path / "by-id"
    alias.symlink_to(port)
    p, _ = problems(
        cfg([tsc("a", f"serial://{port}", controller_id=1), tsc("b", f"serial://{alias}", controller_id=2)])
    )
    assert "under another name" in p["devices[1].url"]


def test_controllers_that_can_share_a_line_pass():
    load_config(cfg([tsc("tsc-17", controller_id=17), tsc("tsc-18", controller_id=18)]))


def test_a_disabled_entry_opens_shares_and_binds_nothing():
    # the controller being replaced stays in the file, disabled, beside its replacement
    old = tsc("tsc-17-old", controller_id=17, enabled=False)
    load_config(cfg([old, tsc("tsc-17", controller_id=17)], [fleet(listen="127.0.0.1:50051", enabled=False)]))


def test_two_receivers_on_one_serial_port_are_refused():
    gps = [{"id": f"bd-{i}", "driver": "beidou", "url": "serial:///dev/ttyUSB0?baudrate=115200"} for i in (1, 2)]
    p, _ = problems(cfg(gps))
    assert "is already 'bd-1'" in p["devices[1].url"]


async def test_a_reload_refuses_devices_that_cannot_share_a_line(tmp_path):
    from gw import base_config, registry
    from tianwang.gateway.app import Gateway
    from tianwang.gateway.lifecycle.registry import default_registry

    data = base_config([{"id": "g", "driver": "testgen", "rate_hz": 5}])
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    reg = registry(*[s for s in default_registry().specs()])
    gw = Gateway(load_config(str(path), reg), registry=reg, config_path=str(path))
    await gw.start()
    try:
        data["devices"] += [tsc("tsc-17", controller_id=17), tsc("tsc-18", controller_id=17)]
        path.write_text(yaml.safe_dump(data))
        assert await gw.reload() is False
        assert gw.supervisor.lookup("tsc-17") is None  # nothing of the refused file was applied
    finally:
        await gw.stop()


# -- 3. addresses -------------------------------------------------------------------------------
def test_any_two_binds_on_one_address_are_refused():
    cam = {
        "id": "cam-1",
        "driver": "onvif",
        "host": "10.1.2.3",
        "username": "admin",
        "password": "pw",
        "events": "webhook",
        "webhook": {"listen": "0.0.0.0:50051"},
    }
    listening = tsc("tsc-1", "tcp://127.0.0.1:9108", tcp_role="listen")
    p, _ = problems(cfg([cam, listening], [fleet(listen="127.0.0.1:5000")], metrics="127.0.0.1:9108"))
    assert (
        p["devices[0].webhook.listen"] == "0.0.0.0:50051 is also gateway.listen's address: each needs a port of its own"
    )
    assert p["devices[1].url"].startswith("127.0.0.1:9108 is also gateway.metrics's address")
    signal_on_listener = tsc("tsc-2", "tcp://127.0.0.1:7808", tcp_role="listen")
    p, _ = problems(cfg([signal_on_listener], [fleet()]))
    assert p["listeners[0].listen"] == "127.0.0.1:7808 is also devices[0]'s address: each needs a port of its own"


def test_cameras_may_share_one_webhook_address():
    cams = [
        {
            "id": f"cam-{i}",
            "driver": "onvif",
            "host": f"10.1.2.{i}",
            "username": "admin",
            "password": "pw",
            "events": "webhook",
            "webhook": {"listen": "0.0.0.0:8089"},
        }
        for i in (1, 2)
    ]
    load_config(cfg(cams))


# -- 4. sharding --------------------------------------------------------------------------------
def split_pair(count):
    """Two ids that the plain hash puts in different shards of `count`."""
    first = "tsc-17"
    for n in range(18, 500):
        other = f"tsc-{n}"
        if shard_of(other, count) != shard_of(first, count):
            return first, other
    raise AssertionError("no split pair")


def test_devices_sharing_a_port_land_in_one_shard(tmp_path, capsys):
    a, b = split_pair(2)
    config = load_config(cfg([tsc(a, controller_id=17), tsc(b, controller_id=18), tsc("alone", "tcp://10.0.0.9:5000")]))
    shards = [[d.id for d in for_shard(config, i, 2).devices] for i in range(2)]
    owner = next(i for i, ids in enumerate(shards) if a in ids)
    assert b in shards[owner]
    assert sorted(shards[0] + shards[1]) == sorted([a, b, "alone"])  # every device runs once
    assert zlib.crc32(b"alone") % 2 == next(i for i, ids in enumerate(shards) if "alone" in ids)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg([tsc(a, controller_id=17), tsc(b, controller_id=18)])))
    assert main(["check", str(path), "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert f"shared link serial:/dev/ttyS1: {a}, {b} -> shard {owner}" in out


# -- 5. naming ----------------------------------------------------------------------------------
def test_problems_name_the_entry_by_id_and_suggest_the_key_meant(tmp_path, capsys):
    cam = {"id": "cam-0017", "driver": "onvif", "host": "10.1.2.3", "usrname": "admin", "password": "pw"}
    typo = {"id": "tsc-0018", "driver": "signl", "url": "serial:///dev/ttyS2"}
    p, err = problems(cfg([cam, typo], colour="blue"))
    assert p["devices[0].usrname"] == "unknown key (did you mean 'username'?)"
    assert p["devices[1].driver"].startswith("unknown driver 'signl' (did you mean 'signal'?)")
    assert "devices[0] (cam-0017).usrname: unknown key (did you mean 'username'?)" in err.lines()
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg([cam, typo])))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "devices[1] (tsc-0018).driver: unknown driver 'signl' (did you mean 'signal'?)" in out
