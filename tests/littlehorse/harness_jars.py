"""Find a JDK and Maven; fetch the server's and Kafka's jars once into a cache outside the repo.

Each pom next to this file lists one artifact. `mvn dependency:copy-dependencies` resolves it
from Maven Central (or whatever mirror the user's ~/.m2/settings.xml names) with a throw-away
local repository, so the cache folder is the only copy on disk. A cache entry is valid while
the pom it came from is byte for byte the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_POM = HERE / "pom-server.xml"
KAFKA_POM = HERE / "pom-kafka.xml"

# Pinned so that the same command does the same thing on every machine; Maven 3.8 would
# otherwise pick its own default version of the plugin.
COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
FETCH_TIMEOUT = 900.0
MIN_JAVA = 25

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class MissingPrerequisite(RuntimeError):
    """A JDK, Maven, or the jars are not there; the message says what and how to get it."""


@dataclass(frozen=True)
class Jars:
    artifact: str  # group:artifact:version
    folder: Path
    count: int
    fetch_seconds: float | None  # None: taken from the cache

    @property
    def classpath(self) -> str:
        return str(self.folder / "*")  # expanded by the java launcher


def cache_root() -> Path:
    if explicit := os.environ.get("REAL_LH_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyui-worker" / "littlehorse"


def pom_artifact(pom: Path) -> tuple[str, str, str]:
    dependency = ET.parse(pom).getroot().find("m:dependencies/m:dependency", _POM_NS)
    assert dependency is not None, f"{pom} lists no dependency"
    group, artifact, version = (
        dependency.findtext(f"m:{tag}", namespaces=_POM_NS)
        for tag in ("groupId", "artifactId", "version")
    )
    assert group and artifact and version, f"{pom}: incomplete dependency"
    return group, artifact, version


def find_mvn() -> str:
    mvn = shutil.which(os.environ.get("REAL_LH_MVN") or "mvn")
    if not mvn:
        raise MissingPrerequisite(
            "Maven (mvn) is not on PATH; it fetches the LittleHorse server and Kafka jars from "
            "Maven Central once (install Maven 3.8+, or set REAL_LH_MVN)"
        )
    return mvn


def _java_major(home: Path) -> int | None:
    java = home / "bin" / "java"
    if not java.is_file():
        return None
    # The `release` file saves starting a JVM per candidate.
    with contextlib.suppress(OSError):
        found = re.search(r'^JAVA_VERSION="(\d+)', (home / "release").read_text(), re.M)
        if found:
            return int(found.group(1))
    try:
        shown = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)', shown)
    return int(found.group(1)) if found else None


def _java_candidates() -> Iterator[Path]:
    for variable in ("REAL_LH_JAVA_HOME", "JAVA_HOME"):
        if value := os.environ.get(variable):
            yield Path(value)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        yield from sorted(jvm.iterdir(), reverse=True)
    if java := shutil.which("java"):
        yield Path(java).resolve().parent.parent


def find_java() -> Path:
    """The `java` of a JDK >= 25 (the server is compiled for 25; Kafka 4 runs on it too)."""
    looked: list[str] = []
    for home in _java_candidates():
        major = _java_major(home)
        looked.append(f"{home} ({major or 'no java'})")
        if major is not None and major >= MIN_JAVA:
            return home / "bin" / "java"
    raise MissingPrerequisite(
        f"no JDK {MIN_JAVA} or newer found (the LittleHorse server is compiled for Java "
        f"{MIN_JAVA}); looked at: {', '.join(looked) or 'nothing'}. Install one (e.g. Temurin "
        f"{MIN_JAVA}) or set REAL_LH_JAVA_HOME to its home"
    )


def _pom_hash(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _cached(folder: Path, digest: str) -> int | None:
    marker = folder / ".complete"
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == digest:
            return len(list(folder.glob("*.jar")))
    return None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # Two runs on one machine (or xdist workers) would otherwise fetch into the same folder.
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _maven_errors(output: str) -> str:
    """Maven's own error lines: what failed, without the help text it prints after them."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in output.splitlines()]
    errors: list[str] = []
    for line in lines:
        if line.strip() == "[ERROR]" and errors:
            break
        if line.startswith("[ERROR] "):
            errors.append(line)
    return "\n".join(errors or lines[-20:])


def fetch(pom: Path, root: Path | None = None) -> Jars:
    """The jars `pom` lists, from the cache or fetched now with mvn."""
    root = root or cache_root()
    group, artifact, version = pom_artifact(pom)
    name = f"{group}:{artifact}:{version}"
    folder = root / f"{artifact}-{version}"
    digest = _pom_hash(pom)
    if (count := _cached(folder, digest)) is not None:
        return Jars(name, folder, count, None)
    with _locked(root):
        if (count := _cached(folder, digest)) is not None:
            return Jars(name, folder, count, None)
        mvn = find_mvn()
        print(f"fetching {name} with mvn into {folder} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as scratch:
            out = Path(scratch) / "jars"
            command = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                f"-Dmaven.repo.local={Path(scratch) / 'repository'}",
                COPY_DEPENDENCIES,
                f"-DoutputDirectory={out}",
            ]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=FETCH_TIMEOUT, cwd=scratch
                )
            except OSError as exc:
                raise MissingPrerequisite(f"cannot run {mvn}: {exc}") from exc
            except subprocess.TimeoutExpired as exc:
                raise MissingPrerequisite(
                    f"mvn did not fetch {name} within {FETCH_TIMEOUT:.0f} s (Maven Central "
                    "unreachable?)"
                ) from exc
            if done.returncode != 0 or not out.is_dir():
                tail = _maven_errors(done.stdout + done.stderr)
                raise MissingPrerequisite(
                    f"mvn could not fetch {name} from Maven Central (exit {done.returncode}):\n"
                    f"{tail}"
                )
            (out / ".complete").write_text(digest + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            out.rename(folder)
        seconds = time.monotonic() - started
    count = len(list(folder.glob("*.jar")))
    print(f"fetched {name}: {count} jars in {seconds:.1f} s", file=sys.stderr, flush=True)
    return Jars(name, folder, count, seconds)
