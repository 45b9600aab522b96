"""docs/contract.md names everything the code publishes and accepts, so the documented contract
cannot drift from the code.

- Payloads: every offline decoder runs over every capture under tests/captures/ (whole files), and an
  in-process gateway runs the beidou and jt808 drivers on their simulators, the test driver (health)
  and SendCommand calls allowed and refused (audit records). Every (channel, key) published must have
  a row in that channel's table, with a matching type, and a "null when" other than "never" if it was
  ever null; every documented channel and key must have been published (a stale row is drift too).
- gRPC: every message and field of tianwang.v1, every rpc.
- CLI: every verb and every option of `tianwang`.
- Config: every key of the core config models and of each built-in driver's config model.

The tables are parsed from the Markdown: a heading whose first `code span` names the section (a
topic such as `gnss/<id>/fix`, a message name, `tianwang VERB`, a config section), and below it
tables whose header starts with `key`, `field` or `rpc`. A key cell may use `{a,b}` alternatives
(`sats_used.{BDS,GPS}`, `token{,_env,_file}`); nested keys are `parent.key` for an object and
`parent[].key` for objects in a list.
"""

from __future__ import annotations

import itertools
import re
import typing

import grpc
import msgpack
import pytest

from gw import CONTROL, READ, ROOT, base_config, client, journal_envelopes, md, running, until, wait_for

pytestmark = pytest.mark.timeout(60)

DOC = ROOT / "docs" / "contract.md"
CAPTURES = ROOT / "tests" / "captures"
# files beside the captures that are not raw device bytes
NOT_CAPTURES = (".md", ".jsonl", ".py")
# what the test-only driver (tests/plugins/tw_testgen.py) publishes besides health is not contract
NOT_CONTRACT = {("test", "reading")}
TYPE_WORDS = re.compile(r"\b(int|float|str|bool|bytes|list|object|map)\b")


# -- reading the doc -----------------------------------------------------------------------------
class Section:
    def __init__(self, level, title):
        self.level = level
        self.title = title
        m = re.search(r"`([^`]+)`", title)
        self.name = m.group(1) if m else title.strip()
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self.text: list[str] = []

    def rows(self, *header):
        """Rows of every table in this section whose header starts with `header`."""
        n = len(header)
        return [row for head, rows in self.tables if tuple(head[:n]) == header for row in rows]


def _cells(line):
    # split on | that is not escaped as \|
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.strip().replace("\\|", "|") for p in parts]


def parse_sections(text):
    sections = [Section(0, "")]
    table = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            sections[-1].text.append(line)
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            sections.append(Section(len(heading.group(1)), heading.group(2)))
            table = None
            continue
        sections[-1].text.append(line)
        if line.startswith("|"):
            cells = _cells(line)
            if table is None:
                table = ([c.lower() for c in cells], [])
                sections[-1].tables.append(table)
            elif not all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
                table[1].append(cells)
        else:
            table = None
    return sections


def expand(spec):
    """`a.{x,y}` -> ['a.x', 'a.y']; `t{,_env}` -> ['t', 't_env']."""
    parts = re.split(r"\{([^}]*)\}", spec)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def code_keys(cell):
    """Every key named in code spans of a table's first cell, expanded."""
    return [k for span in re.findall(r"`([^`]+)`", cell) for k in expand(span.split(" ")[0])]


def channel_of(topic):
    """`gnss/<id>/fix` -> ('gnss', 'fix'); `<family>/<id>/health` -> ('*', 'health')."""
    family, _id, channel = topic.split("/", 2)
    return ("*" if family.startswith("<") else family), channel


def doc_channel(family, channel):
    """A published channel as the doc names it: a camera's `event/RuleEngine/...` is one section,
    `event/<topic-path>`."""
    if family == "camera" and channel.startswith("event/"):
        return "event/<topic-path>"
    return channel


def doc_payloads(sections):
    """{(family, channel): {key path: (types, element types, nullable)}}"""
    out = {}
    for s in sections:
        if not re.fullmatch(r"[^/\s`]+/<[^>]+>/\S+", s.name):
            continue
        keys = out.setdefault(channel_of(s.name), {})
        for row in s.rows("key", "type", "unit", "null when"):
            type_cell = row[1]
            if type_cell.startswith("list of"):
                types, elements = {"list"}, set(TYPE_WORDS.findall(type_cell[len("list of") :]))
            else:
                types, elements = set(TYPE_WORDS.findall(type_cell)), set()
            nullable = not row[3].lower().startswith("never")
            for key in code_keys(row[0]):
                keys[key] = (types, elements, nullable)
    return {k: v for k, v in out.items() if v}


# -- what the code publishes ---------------------------------------------------------------------
def decoder_publications():
    """(family, channel, payload, where) from every offline decoder over every capture, whole."""
    from tianwang.gateway.cli.capture import capture_or_raw
    from tianwang.gateway.cli.decode import BUILTIN_DECODERS, make_decoder

    files = sorted(p for p in CAPTURES.rglob("*") if p.is_file() and p.suffix not in NOT_CAPTURES)
    assert files, f"no captures under {CAPTURES}"
    out = []
    for path in files:
        with path.open("rb") as f:  # raw bytes, or the device's bytes of a `tianwang record` capture
            data = capture_or_raw(f, path.name)[0].read()
        for driver in BUILTIN_DECODERS:
            dec = make_decoder(driver, "capture")
            for pub in dec.feed(data) + dec.finish():
                out.append((dec.family, pub.channel, pub.payload, f"decode --driver {driver} {path.name}"))
    return out


async def gateway_publications():
    """(family, channel, payload, where) from an in-process gateway: the beidou driver on a simulated
    receiver, the jt808 listener with a small simulated fleet, the onvif driver on a simulated camera
    (motion, tamper and line-crossing events), the test driver (health, including a device that never
    connects), SendCommand calls of every outcome and a Record call (audit)."""
    import tempfile

    import tianwang.drivers.beidou as beidou
    import tianwang.drivers.gb28181 as gb28181
    import tianwang.drivers.jt808 as jt808
    import tianwang.drivers.onvif as onvif
    import tianwang.drivers.signal as signal
    from tianwang.drivers.beidou.simulator import ReceiverSimulator
    from tianwang.drivers.jt808.simulator import Fleet
    from tianwang.drivers.onvif.simulator import CameraSim
    from tianwang.drivers.signal.simulator import SignalSimulator
    from tianwang.v1 import gateway_pb2 as pb

    receiver = ReceiverSimulator(
        "tcp", rate=10, talker="GN", rdss="bds3", interval_s=30, card_id="0245679", seed=7, message_every_s=0.2
    )
    await receiver.start()
    cam = CameraSim(rate=20)
    await cam.start()
    controllers = SignalSimulator("tcp", controllers=1, base_id=17, traffic_s=0.3)
    await controllers.start()
    devices = [
        {"id": "tsc-1", "driver": "signal", "url": controllers.url, "poll_hz": 5},
        {"id": "gen-1", "driver": "testgen", "rate_hz": 0},
        {"id": "gen-down", "driver": "testgen", "refuse": True, "backoff": {"initial_s": 0.05, "max_s": 0.1}},
        {
            "id": "bd-1",
            "driver": "beidou",
            "url": receiver.url,
            "rdss": {"protocol": "bds3"},
            "receiver": {"epoch_period_s": 0.1, "sky_decimation": 1},
        },
        {
            "id": "cam-1",
            "driver": "onvif",
            "host": cam.host,
            "port": cam.port,
            "username": cam.username,
            "password": cam.password,
            "pull_timeout_s": 1,
        },
    ]
    from gb_helpers import NVR_ID, PASSWORD, SERVER_ID, GbDevice, channel_ids

    gb_dir = tempfile.TemporaryDirectory(prefix="tw-contract-gb-")
    gb_devices = f"{gb_dir.name}/gb-devices.yaml"
    with open(gb_devices, "w", encoding="utf-8") as f:
        f.write(f"- {{id: '{NVR_ID}', password: '{PASSWORD}', datum: gcj02}}\n")
    gb_channel = channel_ids(NVR_ID, 1)[0]
    listeners = [
        {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret": "contract-docs"},
        {"id": "gb", "driver": "gb28181", "listen": "127.0.0.1:0", "server_id": SERVER_ID, "devices_file": gb_devices},
    ]
    try:
        config = base_config(devices, listeners, control=["test/+", "gnss/+", "signal/+"], name="contract")
        async with running(config, beidou.SPEC, gb28181.SPEC, jt808.SPEC, onvif.SPEC, signal.SPEC) as gw:
            gb_entry = gw.supervisor.lookup("gb")
            await until(lambda: "listen" in gb_entry.info, what="gb28181 listener bound")
            nvr = await GbDevice(
                int(gb_entry.info["listen"].rsplit(":", 1)[1]), NVR_ID, channels=[(gb_channel, "一号")]
            ).start()
            assert (await nvr.register()).status == 200
            await until(lambda: gw.supervisor.lookup(gb_channel) is not None, 10, "gb28181 channel listed")
            assert (await nvr.alarm(source=gb_channel)).status == 200
            assert (await nvr.alarm(method=7, alarm_type=None)).status == 200  # no kind fits; on the device
            assert (await nvr.position(27.83, 112.94)).status == 200
            # a live call the device ends itself (its own BYE): published on the channel's `call`
            played = await gw.supervisor.send_command(gb_channel, "play", {"host": "127.0.0.1", "port": 30000}, 5.0)
            assert (await nvr.transact(nvr.build("BYE", call_id=played["call_id"]))).status == 200
            await nvr.stop()
            listener = gw.supervisor.lookup("fleet")
            await until(lambda: "listen" in listener.info, what="jt808 listener bound")
            fleet = Fleet("127.0.0.1", int(listener.info["listen"].rsplit(":", 1)[1]), terminals=2, rate=10.0)
            await fleet.start()
            try:
                await fleet.wait_online()
                fleet.terminals[0].alarm = 1  # SOS
                receiver.set_antenna("OPEN")
                await until(lambda: gw.supervisor.lookup("tsc-1").state.value == "ONLINE", 10, "signal ONLINE")
                import time as _time

                controllers.controllers[0].fail_lamp(2, _time.time())
                controllers.controllers[0].green_conflict(_time.time())
                phone = fleet.terminals[1].phone
                async with client(gw) as (stub, _):

                    async def send(device, action, token=CONTROL, args=None, reason="contract docs"):
                        req = pb.CommandRequest(
                            device_id=device,
                            action=action,
                            reason=reason,
                            timeout_ms=3000,
                            args=msgpack.packb(args) if isinstance(args, dict) else args or b"",
                        )
                        try:
                            return (await stub.SendCommand(req, metadata=md(token))).code
                        except grpc.aio.AioRpcError as exc:
                            return exc.code().name

                    outcomes = [
                        await send("gen-1", "echo", args={"x": 1}),
                        await send("gen-1", "refuse"),
                        await send(phone, "query_location"),
                        await send("gen-1", "echo", token=READ),
                        await send("gen-1", "echo", token=None),
                        await send("no-such-device", "echo"),
                        await send("not/a/device", "echo"),
                        await send("gen-1", "echo", args=b"\xc1"),  # not msgpack
                    ]
                    assert outcomes == [
                        "OK",
                        "REFUSED",
                        "OK",
                        "PERMISSION_DENIED",
                        "UNAUTHENTICATED",
                        "NOT_FOUND",
                        "INVALID_ARGUMENT",
                        "INVALID_ARGUMENT",
                    ], outcomes
                    # a Record call (audit/<id>/record at its start and end)
                    rec = [
                        c
                        async for c in stub.Record(
                            pb.RecordRequest(device_id="bd-1", max_bytes=200), metadata=md(CONTROL)
                        )
                    ]
                    assert rec[-1].end.startswith("max_bytes"), rec[-1]

                wanted = {f"gnss/bd-1/{c}" for c in ("fix", "state", "sky", "alarm", "message")}
                wanted.add(f"gnss/{fleet.terminals[0].phone}/alarm")
                wanted |= {
                    f"camera/cam-1/event/RuleEngine/{p}"
                    for p in ("CellMotionDetector/Motion", "TamperDetector/Tamper", "LineDetector/Crossed")
                }
                wanted |= {f"signal/tsc-1/{c}" for c in ("lamps", "status", "alarm", "fault", "traffic")}
                wanted |= {
                    f"camera/{gb_channel}/alarm",
                    f"camera/{NVR_ID}/alarm",
                    f"gnss/{NVR_ID}/fix",
                    f"camera/{gb_channel}/call",
                }

                def missing():
                    return wanted - {e["topic"] for e in journal_envelopes(gw.journal)}

                assert await wait_for(lambda: not missing(), 10, 0.1), f"not published: {sorted(missing())}"
            finally:
                await fleet.stop()
            envelopes = journal_envelopes(gw.journal)
    finally:
        await receiver.stop()
        await cam.stop()
        await controllers.stop()
        gb_dir.cleanup()
    out = []
    for e in envelopes:
        family, _id, channel = e["topic"].split("/", 2)
        out.append((family, channel, e["payload"], f"gateway: {e['topic']}"))
    return out


def _type_word(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    for t, word in (
        (float, "float"),
        (str, "str"),
        ((bytes, bytearray), "bytes"),
        ((list, tuple), "list"),
        (dict, "dict"),
    ):
        if isinstance(value, t):
            return word
    return type(value).__name__


def check_payload(doc, payload, prefix, channel, where, seen, problems):
    """Compare one payload (or nested object) with the documented rows of its channel."""
    for key, value in payload.items():
        path = f"{prefix}{key}"
        seen.add(path)
        row = doc.get(path)
        if row is None:
            problems.setdefault(f"{channel}: key `{path}` is published but not documented", where)
            continue
        types, elements, nullable = row
        word = _type_word(value)
        if value is None:
            if not nullable:
                problems.setdefault(f"{channel}: `{path}` was null but the doc says never", where)
            continue
        if word == "dict":
            if not types & {"object", "map"}:
                problems.setdefault(f"{channel}: `{path}` is a map, documented as {sorted(types)}", where)
            elif "object" in types:
                check_payload(doc, value, f"{path}.", channel, where, seen, problems)
        elif word not in types:
            problems.setdefault(f"{channel}: `{path}` is {word}, documented as {sorted(types)}", where)
        elif word == "list":
            for item in value:
                if isinstance(item, dict) and "object" in elements:
                    check_payload(doc, item, f"{path}[].", channel, where, seen, problems)
                elif _type_word(item) not in elements:
                    problems.setdefault(
                        f"{channel}: an item of `{path}` is {_type_word(item)}, documented as {sorted(elements)}", where
                    )


@pytest.fixture(scope="module")
def sections():
    return parse_sections(DOC.read_text(encoding="utf-8"))


# -- the tests -----------------------------------------------------------------------------------
async def test_every_published_payload_key_is_documented(sections):
    doc = doc_payloads(sections)
    assert doc, f"no payload tables found in {DOC}"
    published = decoder_publications() + await gateway_publications()
    problems: dict[str, str] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    for family, channel, payload, where in published:
        if (family, channel) in NOT_CONTRACT:
            continue
        channel = doc_channel(family, channel)
        key = (family, channel) if (family, channel) in doc else ("*", channel)
        name = f"{family}/<id>/{channel}"
        if key not in doc:
            problems.setdefault(f"{name}: channel is published but has no section with a payload table", where)
            continue
        check_payload(doc[key], payload, "", name, where, seen.setdefault(key, set()), problems)
    for key, rows in doc.items():
        name = f"{key[0].replace('*', '<family>')}/<id>/{key[1]}"
        if key not in seen:
            problems[f"{name}: documented, but nothing published it"] = "-"
            continue
        for path in sorted(set(rows) - seen[key]):
            problems[f"{name}: key `{path}` is documented, but nothing published it"] = "-"
    assert not problems, (
        f"docs/contract.md and the code disagree ({len(published)} publications checked):\n"
        + "\n".join(f"  {what}   (seen in: {where})" for what, where in sorted(problems.items()))
    )


def test_every_proto_message_field_and_rpc_is_documented(sections):
    from tianwang.v1 import gateway_pb2 as pb

    by_name = {s.name: s for s in sections}
    missing = []
    for name, message in pb.DESCRIPTOR.message_types_by_name.items():
        s = by_name.get(name)
        if s is None:
            missing.append(f"message {name}: no section")
            continue
        documented = {k for row in s.rows("field", "type", "meaning") for k in code_keys(row[0])}
        missing += [f"{name}.{f.name}" for f in message.fields if f.name not in documented]
        missing += [f"{name}.{k}: documented, not in the proto" for k in documented - {f.name for f in message.fields}]
    service = pb.DESCRIPTOR.services_by_name["Gateway"]
    rpcs = {k for s in sections for row in s.rows("rpc") for k in code_keys(row[0])}
    missing += [f"rpc {m.name}" for m in service.methods if m.name not in rpcs]
    assert not missing, "docs/contract.md lacks (or has stale) gRPC items:\n  " + "\n  ".join(missing)


def test_every_cli_verb_and_option_is_documented(sections):
    from tianwang.gateway.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    shared = next(s for s in sections if "every client verb" in s.title)
    shared_text = "\n".join(shared.text)
    everything = DOC.read_text(encoding="utf-8")
    missing = []
    for option in (o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"):
        if f"`{option}" not in everything:
            missing.append(f"tianwang {option}")
    for verb, sub in verbs.items():
        s = next((s for s in sections if re.match(rf"`tianwang {verb}(\s|`)", s.title)), None)
        if s is None:
            missing.append(f"tianwang {verb}: no section")
            continue
        text = "\n".join(s.text)
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    if not re.search(rf"`{re.escape(option)}\b", text) and f"`{option}" not in shared_text:
                        missing.append(f"tianwang {verb} {option}")
    assert not missing, "docs/contract.md lacks CLI items:\n  " + "\n  ".join(missing)


def _model_keys(model, prefix=""):
    """Dotted key paths of a pydantic model: nested models are walked, lists of models get `[]`."""
    keys = []
    for name, field in model.model_fields.items():
        path = prefix + name
        keys.append(path)
        for sub in _models_in(field.annotation):
            inner, is_list = sub
            keys += _model_keys(inner, path + ("[]." if is_list else "."))
    return keys


def _models_in(annotation, in_list=False):
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, in_list)]
    origin = typing.get_origin(annotation)
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg, in_list or origin in (tuple, list))
    return found


def _is_parent(key, keys):
    # a section such as `gateway.fanout` is documented through its keys; a row of its own is optional
    return any(k.startswith((key + ".", key + "[].")) for k in keys)


def test_every_config_key_is_documented(sections):
    from tianwang.gateway.lifecycle import config as c
    from tianwang.gateway.lifecycle.registry import default_registry

    core, by_driver = set(), {}
    for s in sections:
        keys = {k for row in s.rows("key", "type", "default", "meaning") for k in code_keys(row[0])}
        m = re.fullmatch(r"driver: (\S+)", s.name)
        if m:
            by_driver[m.group(1)] = keys
        else:
            core |= keys
    # devices and listeners are lists of driver-specific entries: their common keys are checked here,
    # each driver's own keys below (listener entries share every device key and add `listen`)
    expected = [k for k in _model_keys(c.Config) if re.split(r"[.\[]", k)[0] not in ("devices", "listeners")]
    expected += _model_keys(c.DeviceConfig, "devices[].")
    expected += [f"listeners[].{k}" for k in c.ListenerConfig.model_fields if k not in c.DeviceConfig.model_fields]
    missing = [k for k in expected if k not in core and not _is_parent(k, expected)]
    missing += [f"{k} is documented, not in the config models" for k in sorted(core - set(expected))]
    specs = default_registry().specs()
    assert {"beidou", "jt808", "onvif"} <= {s.name for s in specs}
    for spec in specs:
        base = c.ListenerConfig if spec.kind == "listener" else c.DeviceConfig
        own = [k for k in _model_keys(spec.config_model) if k.split(".")[0] not in base.model_fields]
        have = by_driver.get(spec.name)
        if have is None:
            missing.append(f"driver: {spec.name}: no section")
            continue
        missing += [f"driver: {spec.name}: {k}" for k in own if k not in have and not _is_parent(k, own)]
        missing += [f"driver: {spec.name}: {k} is documented, not in the model" for k in sorted(have - set(own))]
    assert not missing, "docs/contract.md lacks config keys:\n  " + "\n  ".join(missing)
