"""A Docker engine for the container tests, base images for it, and timed image builds.

``Engine.connect_or_start()`` uses the engine ``DOCKER_HOST`` (or the default socket) names
when it answers; otherwise it starts Debian's ``dockerd`` as a private engine (vfs storage, no
bridge, no iptables: every container runs with ``--network host``) with its own data root,
exec root and socket, and ``close()`` stops it and deletes all of its data.

``ensure_bases()`` pulls the official base images the Dockerfile names; where no registry
answers it makes equivalents locally (``debootstrap --variant=minbase bookworm`` from the
Debian mirror this machine's apt uses, imported with ``docker import``; the Node one adds
Debian's ``nodejs`` and the npm package) and keeps them as tarballs in a cache directory, so
only the first run on a machine pays for them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "docker/Dockerfile"
OFFICIAL_BASES = {"DEBIAN_IMAGE": "debian:12-slim", "NODE_IMAGE": "node:20-bookworm-slim"}
LOCAL_BASES = {
    "DEBIAN_IMAGE": "plantnotify-base/debian:bookworm",
    "NODE_IMAGE": "plantnotify-base/node:bookworm",
}
# npm for the local Node base: Debian 12's own npm package drags in ~300 node-* packages
# (430 MB of image); the npm registry's npm is one tarball, as in the official Node images.
NPM_VERSION = "10.9.2"
BASE_MAX_AGE_DAYS = 7
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plantnotify"

# What debian:12-slim configures so images stay small (debuerreotype's "slimify"): the local
# base does the same, so the image sizes measured here are the ones users get.
SLIM_DPKG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
SLIM_APT = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}


def log(message: str) -> None:
    print(f"[containers] {message}", flush=True)


@dataclass
class Engine:
    client: docker.DockerClient | None
    host: str  # DOCKER_HOST value for the docker and compose CLIs
    ours: bool
    workdir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def connect_or_start(cls) -> Engine:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            client = docker.DockerClient(base_url=host, timeout=600)
            client.ping()
            log(f"using the running engine at {host}")
            return cls(client, host, ours=False)
        except Exception:
            log(f"no engine answers at {host}: starting one")
        dockerd = shutil.which("dockerd")
        assert dockerd, "dockerd is not installed: scripts/install-system.sh installs docker.io"
        # Short paths: containerd's sockets live under the exec root (108-byte socket limit).
        workdir = Path(tempfile.mkdtemp(prefix="pn-docker-"))
        sock = workdir / "docker.sock"
        log_file = (workdir / "dockerd.log").open("wb")
        process = subprocess.Popen(
            [
                dockerd,
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={workdir / 'data'}",
                f"--exec-root={workdir / 'exec'}",
                f"--pidfile={workdir / 'dockerd.pid'}",
                f"--host=unix://{sock}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=f"unix://{sock}", timeout=600)
                client.ping()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    text = (workdir / "dockerd.log").read_text(errors="replace")[-3000:]
                    cls(None, "", ours=True, workdir=workdir, process=process).close()
                    raise AssertionError(f"dockerd did not start:\n{text}") from None
                time.sleep(0.3)
        engine = cls(client, f"unix://{sock}", ours=True, workdir=workdir, process=process)
        log(f"started a private engine (dockerd pid {process.pid}, {workdir})")
        return engine

    def close(self) -> None:
        """Stop the engine and delete its data, only if it is ours."""
        if not self.ours:
            return
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.workdir is not None:
            # dockerd leaves its network namespace mounted under the exec root.
            mounts = [
                line.split()[1]
                for line in Path("/proc/self/mounts").read_text().splitlines()
                if line.split()[1].startswith(f"{self.workdir}/")
            ]
            for mountpoint in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
            log(f"stopped the private engine, deleted {self.workdir}")

    def env(self, docker_config: Path | None = None) -> dict[str, str]:
        """Environment for the docker/compose CLIs: this engine, nothing else of the caller's."""
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env["DOCKER_HOST"] = self.host
        if docker_config is not None:
            env["DOCKER_CONFIG"] = str(docker_config)
        return env


# ---- base images ----------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (never a guessed host name)."""
    out = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        match = re.match(r"\s*\d+\s+(https?://\S+)\s+bookworm/main\s", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no bookworm/main source in this machine's apt sources:\n{out}")


def _pull(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(ref)
        return True
    except docker.errors.APIError as exc:
        log(f"cannot pull {ref}: {str(exc)[:200]}")
        return False


def _fresh(path: Path) -> bool:
    return path.is_file() and time.time() - path.stat().st_mtime < BASE_MAX_AGE_DAYS * 86400


def _load(client: docker.DockerClient, tarball: Path) -> None:
    with tarball.open("rb") as f:
        client.images.load(f)


def _save(client: docker.DockerClient, ref: str, tarball: Path) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    with partial.open("wb") as f:
        for chunk in client.images.get(ref).save(named=True):
            f.write(chunk)
    partial.replace(tarball)


def make_debian_base(client: docker.DockerClient, ref: str) -> None:
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="pn-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap --variant=minbase bookworm from {mirror} ...")
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-2000:]}"
        (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG)
        for name, text in SLIM_APT.items():
            (rootfs / "etc/apt/apt.conf.d" / name).write_text(text)
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
            for path in rootfs.glob(pattern):
                path.unlink() if path.is_file() else shutil.rmtree(path)
        for sub in ("usr/share/doc", "usr/share/man", "usr/share/info"):
            for path in (rootfs / sub).glob("*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for path in (rootfs / "usr/share/locale").glob("*"):
            if path.name != "locale.alias":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        image_id = client.api.import_image_from_stream(
            tar.stdout,
            repository=ref.split(":")[0],
            tag=ref.split(":")[1],
            changes=['CMD ["bash"]'],
        )
        assert tar.wait() == 0
        log(f"imported {ref}: {str(image_id)[:80]}")


def make_node_base(client: docker.DockerClient, ref: str, debian: str) -> None:
    with tempfile.TemporaryDirectory(prefix="pn-nodebase-") as tmp:
        context = Path(tmp)
        subprocess.run(
            ["npm", "pack", "--silent", f"npm@{NPM_VERSION}"],
            cwd=context,
            check=True,
            capture_output=True,
        )
        (next(context.glob("npm-*.tgz"))).rename(context / "npm.tgz")
        (context / "Dockerfile").write_text(
            f"FROM {debian}\n"
            "COPY npm.tgz /tmp/npm.tgz\n"
            "RUN apt-get update"
            " && apt-get install -y --no-install-recommends nodejs ca-certificates"
            " && apt-get clean && rm -rf /var/lib/apt/lists/*"
            " && mkdir -p /usr/local/lib/node_modules/npm"
            " && tar -xzf /tmp/npm.tgz -C /usr/local/lib/node_modules/npm --strip-components=1"
            " && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm"
            " && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx"
            " && rm /tmp/npm.tgz && node --version && npm --version\n"
        )
        build(client, context, ref, dockerfile="Dockerfile")


def ensure_bases(client: docker.DockerClient) -> dict[str, str]:
    """Build arguments naming base images that exist in the engine: official where they can be
    pulled (then no build argument is needed), local equivalents otherwise."""
    if all(_pull(client, ref) for ref in OFFICIAL_BASES.values()):
        return {}
    cache = CACHE / "docker-bases"
    debian, node = LOCAL_BASES["DEBIAN_IMAGE"], LOCAL_BASES["NODE_IMAGE"]
    for ref, make in (
        (debian, lambda: make_debian_base(client, debian)),
        (node, lambda: make_node_base(client, node, debian)),
    ):
        tarball = cache / (ref.replace("/", "_").replace(":", "_") + ".tar")
        try:
            client.images.get(ref)
            continue
        except docker.errors.ImageNotFound:
            pass
        if _fresh(tarball):
            started = time.monotonic()
            _load(client, tarball)
            log(f"loaded {ref} from {tarball} in {time.monotonic() - started:.1f}s")
            continue
        started = time.monotonic()
        make()
        log(f"made {ref} in {time.monotonic() - started:.1f}s; cached as {tarball}")
        _save(client, ref, tarball)
    return dict(LOCAL_BASES)


# ---- builds ---------------------------------------------------------------------------------


@dataclass
class Build:
    ref: str
    seconds: float
    image_id: str
    steps: int
    cached_steps: int
    output: list[str] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)


def build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    dockerfile: str = DOCKERFILE,
    target: str | None = None,
    buildargs: dict[str, str] | None = None,
) -> Build:
    """One image with the classic builder (the Engine API's /build), host network for the
    RUN steps (the private engine has no bridge), timed; fails with the build's output."""
    started = time.monotonic()
    output: list[str] = []
    steps: list[tuple[str, float]] = []  # each step and when it began
    image_id = ""
    for chunk in client.api.build(
        path=str(context),
        dockerfile=dockerfile,
        target=target,
        tag=tag,
        buildargs=buildargs or {},
        network_mode="host",
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "stream" in chunk:
            output.append(chunk["stream"])
            if re.match(r"Step \d+/\d+ :", chunk["stream"]):
                steps.append((chunk["stream"].strip()[:90], time.monotonic()))
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            raise AssertionError(
                f"building {tag} failed: {chunk['error']}\n" + "".join(output)[-6000:]
            )
    text = "".join(output)
    assert image_id, f"building {tag}: no image id\n{text[-4000:]}"
    ended = time.monotonic()
    durations = [
        (name, (steps[i + 1][1] if i + 1 < len(steps) else ended) - at)
        for i, (name, at) in enumerate(steps)
    ]
    return Build(
        ref=tag,
        seconds=ended - started,
        slowest=sorted(durations, key=lambda d: -d[1])[:4],
        image_id=image_id,
        steps=len(re.findall(r"^Step \d+/\d+ :", text, re.M)),
        cached_steps=text.count("Using cache"),
        output=output,
    )


def image_files(client: docker.DockerClient, ref: str) -> Iterator[tuple[str, str, bytes]]:
    """Every regular file of every layer of an image: (layer, path, content)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    for chunk in client.images.get(ref).save():
        buffer.write(chunk)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as outer:
        manifest: list[dict[str, Any]] = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        yield "config", "config.json", outer.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        for layer in manifest[0]["Layers"]:
            member = outer.extractfile(layer)
            assert member is not None
            with tarfile.open(fileobj=io.BytesIO(member.read())) as inner:
                for entry in inner:
                    if entry.isfile():
                        data = inner.extractfile(entry)
                        yield layer, entry.name, data.read() if data else b""
