"""Populate a CNI bin dir: our `nodeagent-bridge` plus links to the reference plugins.

containerd 1.6 takes ONE bin_dir, so the reference loopback/portmap/bandwidth/host-local (Debian's
containernetworking-plugins, /usr/lib/cni) are symlinked next to ours. nodeagent-bridge is the
static C shim (shim.c) compiled once per source/interpreter into a cache and copied in; without a C
compiler it is a tiny Python script running nodeagent.cni.shim (slower start, same behaviour).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile

log = logging.getLogger("nodeagent.cni")

PLUGIN_NAME = "nodeagent-bridge"
REFERENCE_DIR = "/usr/lib/cni"
REFERENCE_PLUGINS = ("loopback", "portmap", "bandwidth", "host-local")
SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")


def _cache_dir() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.environ.get("NODEAGENT_CNI_BUILD_DIR", os.path.join(repo, "build", "cni"))


def build_shim(python: str = sys.executable, cache_dir: str | None = None) -> str | None:
    """Compile shim.c (static, with the fallback interpreter baked in); the cached binary's path,
    or None when there is no compiler or the build failed."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    with open(SHIM_SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + python.encode()).hexdigest()[:16]
    cache_dir = cache_dir or _cache_dir()
    out = os.path.join(cache_dir, f"{PLUGIN_NAME}-{key}")
    if os.path.exists(out):
        return out
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".shim-")
    os.close(fd)
    define = '-DNA_PYTHON="' + python.replace("\\", "\\\\").replace('"', '\\"') + '"'
    for static in (["-static"], []):  # static starts fastest; fall back if no static libc
        r = subprocess.run([cc, "-O2", *static, define, "-o", tmp, SHIM_SOURCE], capture_output=True, text=True)
        if r.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)
            return out
        log.warning("cni shim build failed cc=%s static=%s err=%s", cc, bool(static), r.stderr.strip()[-500:])
    os.unlink(tmp)
    return None


def _python_shim(python: str) -> bytes:
    # -I: no user site, no PYTHON* variables, no cwd on sys.path; the venv's site still loads.
    return f"#!{python} -I\nfrom nodeagent.cni.shim import main\nraise SystemExit(main())\n".encode()


def _atomic_write(path: str, data: bytes | None, copy_from: str | None = None) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".install-")
    try:
        if copy_from:
            os.close(fd)
            shutil.copyfile(copy_from, tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data or b"")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # a running exec keeps the old inode: safe while containerd calls it
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def install(bin_dir: str, python: str = sys.executable, reference_dir: str = REFERENCE_DIR) -> str:
    """Idempotent. Returns the path of the installed nodeagent-bridge."""
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, PLUGIN_NAME)
    binary = build_shim(python)
    if binary:
        with open(binary, "rb") as a:
            same = os.path.exists(target) and open(target, "rb").read() == a.read()
        if not same:
            _atomic_write(target, None, copy_from=binary)
    else:
        data = _python_shim(python)
        if not (os.path.exists(target) and open(target, "rb").read() == data):
            _atomic_write(target, data)
    for name in REFERENCE_PLUGINS:
        src = os.path.join(reference_dir, name)
        link = os.path.join(bin_dir, name)
        if not os.path.exists(src):
            log.warning("cni reference plugin missing path=%s (apt-get install containernetworking-plugins)", src)
            continue
        if os.path.islink(link) and os.readlink(link) == src:
            continue
        tmp = f"{link}.tmp{os.getpid()}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(src, tmp)
        os.replace(tmp, link)
    log.info("cni plugins installed bin_dir=%s shim=%s", bin_dir, "static" if binary else "python")
    return target
