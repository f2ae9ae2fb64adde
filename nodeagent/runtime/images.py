"""Build nodeagent's container images locally as OCI image layouts and import them into containerd.

No registry is reachable on these machines (shared/ENVIRONMENT.md), so the two images every node
needs are built here from what the machine has:

- nodeagent.local/pause:1   the sandbox image: our own static pause program (pause/pause.c,
                            compiled with `gcc -static`) as /pause, the entrypoint.
- nodeagent.local/toolbox:1 Debian's /bin/busybox (package busybox-static) with a symlink per
                            applet (sh, httpd, nc, wget, ip, nslookup, sleep, cat, echo, ls, ps,
                            hostname, env, ...), /bin/web, a wget wrapper (below) and a default
                            CMD of `sh`.

  /bin/web [PORT]  writes the container's hostname (the pod's name) to /www/index.html and runs
                   `httpd -f -p PORT -h /www` in the foreground (PORT: $PORT or 80), so each
                   backend of a Service answers `GET /` with its own pod name.
  wget             busybox wget, except that -T SECONDS is enforced with `timeout`: Debian's
                   busybox-static 1.35 crashes on its own -T option.

Every blob is content addressed and the layers are byte-for-byte reproducible (sorted entries,
owner 0, mtime 0, gzip without a timestamp), so rebuilding unchanged inputs writes nothing and
re-importing an unchanged image is skipped. Each image is kept in the cache both as a layout
directory (<cache>/<name>/{oci-layout,index.json,blobs/sha256/...}) and as the tar of that layout
(<cache>/<name>.tar) that `ctr images import` reads. Names are fully qualified: the CRI plugin
would turn a short name into docker.io/... and try the network.
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PAUSE_IMAGE = "nodeagent.local/pause:1"
TOOLBOX_IMAGE = "nodeagent.local/toolbox:1"
ALL_IMAGES = (PAUSE_IMAGE, TOOLBOX_IMAGE)
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
PAUSE_SOURCE = PACKAGE_DIR / "pause" / "pause.c"
BUSYBOX = Path("/bin/busybox")

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"  # ctr import names the image by this
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

WEB_SCRIPT = """#!/bin/sh
# nodeagent toolbox: serve this container's hostname (the pod's name) over HTTP.
# Usage: web [PORT]   (PORT defaults to $PORT, then 80)
port="${1:-${PORT:-80}}"
mkdir -p /www
hostname > /www/index.html
exec httpd -f -p "$port" -h /www
"""

# Debian's busybox-static 1.35 wget crashes (SIGSEGV) while parsing its own -T option, which
# `kubectl exec POD -- wget -T 2 ...` users reach for first; this wrapper takes -T N (or -TN,
# --timeout=N) off the command line and enforces it with busybox's `timeout` instead.
WGET_SCRIPT = """#!/bin/sh
# nodeagent toolbox: busybox wget, with -T SECONDS enforced by `timeout` (see images.py).
t=""
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case "$a" in
    -T) t=$1; shift; n=$((n - 1)); continue ;;
    -T*) t=${a#-T}; continue ;;
    --timeout=*) t=${a#--timeout=}; continue ;;
  esac
  set -- "$@" "$a"
done
if [ -n "$t" ]; then exec timeout "$t" busybox wget "$@"; fi
exec busybox wget "$@"
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageBuildError(RuntimeError):
    pass


def image_cache_dir() -> Path:
    """$NODEAGENT_IMAGE_CACHE, else <repo>/build/images."""
    env = os.environ.get("NODEAGENT_IMAGE_CACHE")
    return Path(env) if env else REPO_ROOT / "build" / "images"


def image_dir_name(name: str) -> str:
    """A file name for an image name: nodeagent.local/pause:1 -> nodeagent.local_pause_1."""
    return name.replace("/", "_").replace(":", "_")


def oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


# ---------------------------------------------------------------------------- layers

@dataclass
class Entry:
    """One file system entry of a layer."""

    path: str  # relative, no leading "/"
    kind: str  # "dir", "file", "symlink"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""  # for symlinks


def _tar_layer(entries: Iterable[Entry]) -> bytes:
    """A reproducible tar: entries sorted by path, owner 0:0, mtime 0, no user/group names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header keep the output a function of the input only.
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class ImageSpec:
    name: str
    entries: list[Entry]
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: [f"PATH={DEFAULT_PATH}"])
    working_dir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class BuiltImage:
    name: str
    layout: Path           # the OCI layout directory
    archive: Path          # the tar of the layout, for `ctr images import`
    manifest_digest: str   # sha256:... of the manifest (what containerd shows as the image digest)
    config_digest: str     # sha256:... of the config (the CRI's image id)
    changed: bool          # False when the cache already held exactly this image


def _blobs(spec: ImageSpec) -> tuple[dict[str, bytes], str, str, bytes]:
    """Compute every blob: returns (blobs by digest, manifest digest, config digest, index.json)."""
    layer_tar = _tar_layer(spec.entries)
    layer = _gzip(layer_tar)
    config_obj: dict[str, object] = {
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": spec.env,
            "WorkingDir": spec.working_dir,
            **({"Entrypoint": spec.entrypoint} if spec.entrypoint else {}),
            **({"Cmd": spec.cmd} if spec.cmd else {}),
            **({"Labels": spec.labels} if spec.labels else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "nodeagent images build"}],
    }
    config = _json(config_obj)
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}],
    })
    tag = spec.name.rsplit(":", 1)[1] if ":" in spec.name.rsplit("/", 1)[-1] else "latest"
    index = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": _digest(manifest),
            "size": len(manifest),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {ANNOTATION_CONTAINERD_NAME: spec.name, ANNOTATION_REF_NAME: tag},
        }],
    })
    blobs = {_digest(b): b for b in (layer, config, manifest)}
    return blobs, _digest(manifest), _digest(config), index


def _archive(layout: Path, out: Path) -> None:
    """The tar of a layout directory, reproducible like the layers."""
    entries: list[Entry] = []
    for root, dirs, files in os.walk(layout):
        rel_root = os.path.relpath(root, layout)
        for d in dirs:
            entries.append(Entry(os.path.normpath(os.path.join(rel_root, d)), "dir", 0o755))
        for f in files:
            p = os.path.join(root, f)
            entries.append(Entry(os.path.normpath(os.path.join(rel_root, f)), "file", 0o644,
                                 Path(p).read_bytes()))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_tar_layer(entries))
    os.replace(tmp, out)


def write_layout(spec: ImageSpec, cache_dir: Path | None = None) -> BuiltImage:
    """Write the image as an OCI layout (and its tar) into the cache; skip when unchanged."""
    cache = cache_dir or image_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    blobs, manifest_digest, config_digest, index = _blobs(spec)
    layout = cache / image_dir_name(spec.name)
    archive = cache / f"{image_dir_name(spec.name)}.tar"
    current = layout / "index.json"
    if current.exists() and current.read_bytes() == index and archive.exists():
        return BuiltImage(spec.name, layout, archive, manifest_digest, config_digest, changed=False)
    # Build next to the final place, then swap it in: a concurrent reader sees old or new, whole.
    tmp = Path(tempfile.mkdtemp(prefix=f".{image_dir_name(spec.name)}-", dir=cache))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        (tmp / "blobs" / "sha256").mkdir(parents=True)
        for digest, data in blobs.items():
            (tmp / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        (tmp / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
        (tmp / "index.json").write_bytes(index)
        _archive(tmp, archive)
        old = None
        if layout.exists():
            old = cache / f".old-{image_dir_name(spec.name)}-{os.getpid()}"
            os.replace(layout, old)
        os.replace(tmp, layout)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built image name=%s manifest=%s", spec.name, manifest_digest)
    return BuiltImage(spec.name, layout, archive, manifest_digest, config_digest, changed=True)


# ---------------------------------------------------------------------------- the two images

def compile_pause(cache_dir: Path | None = None) -> bytes:
    """The static pause binary, compiled once per (source, compiler) and kept in the cache."""
    cache = cache_dir or image_cache_dir()
    source = PAUSE_SOURCE.read_bytes()
    try:
        gcc_version = subprocess.run(["gcc", "--version"], capture_output=True, text=True,
                                     check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError) as e:
        raise ImageBuildError(f"building the pause image needs gcc (apt-get install gcc libc6-dev): {e}") from e
    key = hashlib.sha256(source + gcc_version.encode()).hexdigest()[:16]
    binary = cache / "pause-bin" / key / "pause"
    if binary.exists():
        return binary.read_bytes()
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f".pause.{os.getpid()}")
    cmd = ["gcc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-o", str(tmp), str(PAUSE_SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"compiling {PAUSE_SOURCE} failed ({' '.join(cmd)}):\n{proc.stderr}")
    os.replace(tmp, binary)
    return binary.read_bytes()


def pause_spec(cache_dir: Path | None = None) -> ImageSpec:
    return ImageSpec(
        name=PAUSE_IMAGE,
        entries=[Entry("pause", "file", 0o755, compile_pause(cache_dir))],
        entrypoint=["/pause"],
    )


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Installed paths of every applet (bin/sh, usr/bin/wget, sbin/ip, ...)."""
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ImageBuildError(
            f"building the toolbox image needs {busybox} (apt-get install busybox-static): {e}") from e
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def toolbox_spec(busybox: Path = BUSYBOX) -> ImageSpec:
    try:
        data = busybox.read_bytes()
    except OSError as e:
        raise ImageBuildError(f"building the toolbox image needs {busybox} (apt-get install busybox-static): {e}") from e
    entries = [
        Entry("bin", "dir"), Entry("sbin", "dir"), Entry("usr", "dir"), Entry("usr/bin", "dir"),
        Entry("usr/sbin", "dir"), Entry("etc", "dir"), Entry("root", "dir", 0o700),
        Entry("tmp", "dir", 0o1777), Entry("www", "dir"), Entry("var", "dir"),
        Entry("bin/busybox", "file", 0o755, data),
        Entry("bin/web", "file", 0o755, WEB_SCRIPT.encode()),
        Entry("usr/bin/wget", "file", 0o755, WGET_SCRIPT.encode()),
        Entry("etc/passwd", "file", 0o644, PASSWD.encode()),
        Entry("etc/group", "file", 0o644, GROUP.encode()),
    ]
    seen = {e.path for e in entries}
    for path in busybox_applets(busybox):
        if path not in seen:
            seen.add(path)
            entries.append(Entry(path, "symlink", target="/bin/busybox"))
    return ImageSpec(name=TOOLBOX_IMAGE, entries=entries, cmd=["sh"])


def build_all(cache_dir: Path | None = None) -> dict[str, BuiltImage]:
    """Build (or find unchanged in the cache) every nodeagent image."""
    cache = cache_dir or image_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    built = {}
    # One builder at a time per cache: concurrent `images build` runs (tests, several nodes
    # starting together) would otherwise race renaming the same layout directory.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for spec in (pause_spec(cache), toolbox_spec()):
            built[spec.name] = write_layout(spec, cache)
    return built


def built_images(cache_dir: Path | None = None) -> dict[str, BuiltImage] | None:
    """The images as the cache holds them now, or None when any is missing (without building)."""
    cache = cache_dir or image_cache_dir()
    out = {}
    for name in ALL_IMAGES:
        layout = cache / image_dir_name(name)
        archive = cache / f"{image_dir_name(name)}.tar"
        try:
            index = json.loads((layout / "index.json").read_bytes())
            desc = index["manifests"][0]
            manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]).read_bytes())
        except (OSError, ValueError, KeyError, IndexError):
            return None
        if not archive.exists():
            return None
        out[name] = BuiltImage(name, layout, archive, desc["digest"], manifest["config"]["digest"], False)
    return out


# ---------------------------------------------------------------------------- import

def _address(socket: str) -> str:
    return socket[len("unix://"):] if socket.startswith("unix://") else socket


def _ctr(address: str, *args: str) -> list[str]:
    return ["ctr", "--address", _address(address), "--namespace", CRI_NAMESPACE, *args]


async def _run(argv: Sequence[str], what: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}: "
                              f"{err.decode(errors='replace').strip()}")
    return out.decode()


async def containerd_images(address: str) -> dict[str, str]:
    """Image name -> manifest digest, as containerd's k8s.io namespace holds them."""
    out = await _run(_ctr(address, "images", "list"), f"listing images of containerd {address}")
    images = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            images[cols[0]] = cols[2]
    return images


async def import_images(
    address: str,
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    build: bool = True,
) -> list[str]:
    """Import the cached images into the containerd at `address` (socket path or unix://) unless
    it already holds the same manifest under the same name. Builds them first when the cache
    lacks them (build=True). Returns the names imported."""
    wanted = list(names or ALL_IMAGES)
    built = built_images(cache_dir)
    if built is None or any(n not in built for n in wanted):
        if not build:
            raise ImageBuildError(f"images missing from {cache_dir or image_cache_dir()}: "
                                  "run `nodeagent images build`")
        built = await asyncio.to_thread(build_all, cache_dir)
    have = await containerd_images(address)
    imported = []
    for name in wanted:
        image = built[name]
        if have.get(name) == image.manifest_digest:
            continue
        await _run(_ctr(address, "images", "import", "--snapshotter", "overlayfs", str(image.archive)),
                   f"importing {name} into containerd {address}")
        imported.append(name)
        log.info("imported image name=%s address=%s digest=%s", name, address, image.manifest_digest)
    return imported
