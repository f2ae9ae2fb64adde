"""A pod image with a Python runtime and the official `kubernetes` client, for the in-cluster
client test: the toolbox image has no Python and no registry can be reached, so this one is
assembled from the machine's own interpreter (the one the venv runs on), its standard library,
the client and its dependencies from the venv, and every shared library they link (ldd). The
result is a real pod running `kubernetes.config.load_incluster_config()`: the token, CA and
namespace come from the kubelet's projected volume, the apiserver address from
KUBERNETES_SERVICE_HOST/PORT, the traffic goes through kube-proxy's ClusterIP rules."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from nodeagent.runtime.images import BuiltImage, Entry, ImageSpec, write_layout

IMAGE = "nodeagent.local/python-client:1"
PACKAGES = ("kubernetes", "urllib3", "certifi", "dateutil", "yaml", "_yaml", "requests", "oauthlib",
            "requests_oauthlib", "websocket", "durationpy", "charset_normalizer", "idna", "google", "pydantic",
            "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions.py")
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "distutils", "pydoc_data",
               "site-packages", "__pycache__", "unittest"}


def _files(root: Path, skip: set[str]) -> list[Path]:
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if any(part in skip for part in rel) or "__pycache__" in rel or p.is_dir():
            continue
        out.append(p)
    return out


def _libs(binaries: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True).stdout
        for m in re.finditer(r"(/\S+\.so[.\d]*)", out):
            libs.add(Path(m.group(1)).resolve())
            libs.add(Path(m.group(1)))
    return libs


def python_client_spec() -> ImageSpec:
    base = Path(sys.base_prefix)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = base / "lib" / ver
    site = Path(sysconfig.get_paths()["purelib"])
    entries: dict[str, Entry] = {}

    def add(src: Path, dest: str, mode: int | None = None) -> None:
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            entries.setdefault(d, Entry(d, "dir"))
        entries[dest.strip("/")] = Entry(dest.strip("/"), "file", mode or (src.stat().st_mode & 0o777),
                                         src.read_bytes())

    interp = (base / "bin" / ver).resolve()
    add(interp, "usr/local/bin/python3", 0o755)
    for lib in (base / "lib").glob("libpython*.so*"):
        add(lib, f"usr/local/lib/{lib.name}")
    binaries = [interp]
    for f in _files(stdlib, SKIP_STDLIB):
        add(f, f"usr/local/lib/{ver}/{f.relative_to(stdlib)}")
        if f.suffix == ".so":
            binaries.append(f)
    for name in PACKAGES:
        for p in site.glob(f"{name}*"):
            if p.name.endswith(".dist-info"):
                continue
            for f in ([p] if p.is_file() else _files(p, set())):
                add(f, f"usr/local/lib/{ver}/site-packages/{f.relative_to(site)}")
                if f.suffix == ".so":
                    binaries.append(f)
    for lib in _libs(binaries):
        if lib.exists() and "/usr/local/lib/" not in str(lib) and str(base) not in str(lib):
            add(lib.resolve(), str(lib))
    entries["tmp"] = Entry("tmp", "dir", 0o1777)
    return ImageSpec(name=IMAGE, entries=list(entries.values()), entrypoint=["/usr/local/bin/python3"],
                     env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONHOME=/usr/local", "LD_LIBRARY_PATH=/usr/local/lib",
                          "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"])


def build_python_client_image(cache_dir: Path | None = None) -> BuiltImage:
    return write_layout(python_client_spec(), cache_dir)
