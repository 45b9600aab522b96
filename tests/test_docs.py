"""What the README promises works as written: the example subscriber, the two make targets named
in it, the example config under deploy/."""

import asyncio
import os
import re
import sys

import pytest

from gw import READ, ROOT, base_config, running

pytestmark = pytest.mark.timeout(60)


def test_readme_shows_the_example_subscriber_verbatim():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "minimal_subscriber.py").read_text().strip()
    assert example in readme
    assert len(example.splitlines()) <= 16
    # the two set-up commands open the README
    assert readme.index("make demo") < readme.index("make test") < readme.index("## For integrators")


async def test_example_subscriber_prints_fixes_and_gaps():
    async with running(base_config([], journal={"max_bytes": "64KiB"})) as gw:
        for i in range(1500):  # more than the journal keeps: the replay from seq 1 starts with a Gap
            gw.router.publish(
                f"gnss/bd-{i % 3}/fix", f"bd-{i % 3}", {"lat": 31.0 + i * 1e-6, "lon": 121.5, "speed_mps": 2.5}
            )
        env = dict(os.environ, TIANWANG_TOKEN=READ, FROM_SEQ="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "minimal_subscriber.py"),
            f"127.0.0.1:{gw.port}",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert re.match(r"gap 1\.\.\d+: retention", first), first
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
            assert int(line[0]) == gw.journal.first_seq and line[1].startswith("bd-") and line[4] == "2.5"
        finally:
            proc.kill()
            await proc.wait()


def test_example_config_passes_check(tmp_path):
    import subprocess

    env = dict(
        os.environ, TW_TOKEN_CC="a" * 32, TW_TOKEN_GIS="b" * 32, TW_TOKEN_VIDEO="c" * 32, TW_JT808_SECRET="d" * 32
    )
    # the TLS files of the example do not exist here: everything else must be clean. Its state
    # directory (/var/lib/tianwang, the systemd unit's StateDirectory) is a temporary one here
    (tmp_path / "state").mkdir()
    copy = tmp_path / "tianwang.example.yaml"
    copy.write_text(
        (ROOT / "deploy" / "tianwang.example.yaml").read_text().replace("/var/lib/tianwang", str(tmp_path / "state"))
    )
    r = subprocess.run(
        [sys.executable, "-m", "tianwang", "check", str(copy)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    problems = [line for line in r.stdout.splitlines() if not line.startswith("gateway.tls.")]
    assert problems == [], r.stdout
    assert all("cannot read /etc/tianwang/tls/" in line for line in r.stdout.splitlines())


def _slug(heading):
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_in_readme_and_docs_resolve_inside_the_repository():
    """A reader has only the repository: every relative link (and its #anchor) must land in it."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 4, pages
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or ROOT.resolve() not in dest.parents:
                broken.append(f"{page.name}: {target} (no such file in the repository)")
            elif anchor and dest.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in anchors:
                    broken.append(f"{page.name}: {target} (no heading with that anchor)")
        for outside in ("DESIGN.md", "release notes", "../shared", "design repository"):
            if outside in text:
                broken.append(f"{page.name}: mentions {outside!r}, which readers of the repository do not have")
    assert not broken, "\n".join(broken)
