"""Image building: valid OCI layouts, reproducible, content addressed, idempotent."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from nodeagent.runtime import images

needs_tools = pytest.mark.skipif(not (shutil.which("gcc") and images.BUSYBOX.exists()),
                                 reason="needs gcc and busybox-static (make setup installs them)")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_layout(layout: Path) -> tuple[dict, dict, dict, bytes]:
    """index, manifest, config, uncompressed layer; checking every digest and size on the way."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())

    def blob(desc: dict) -> bytes:
        data = (layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes()
        assert sha(data) == desc["digest"] and len(data) == desc["size"]
        return data

    (mdesc,) = index["manifests"]
    manifest = json.loads(blob(mdesc))
    config = json.loads(blob(manifest["config"]))
    (ldesc,) = manifest["layers"]
    assert ldesc["mediaType"] == images.MEDIA_LAYER_GZIP
    layer = gzip.decompress(blob(ldesc))
    assert config["rootfs"]["diff_ids"] == [sha(layer)]
    return index, manifest, config, layer


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, images.BuiltImage]:
    if not (shutil.which("gcc") and images.BUSYBOX.exists()):
        pytest.skip("needs gcc and busybox-static (make setup installs them)")
    return images.build_all(tmp_path_factory.mktemp("cache"))


def test_pause_image_layout(built: dict[str, images.BuiltImage]) -> None:
    img = built[images.PAUSE_IMAGE]
    index, manifest, config, layer = read_layout(img.layout)
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "nodeagent.local/pause:1"
    assert index["manifests"][0]["digest"] == img.manifest_digest
    assert manifest["config"]["digest"] == img.config_digest
    assert config["config"]["Entrypoint"] == ["/pause"] and config["os"] == "linux"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "pause" and member.mode == 0o755 and member.mtime == 0
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert data[:4] == b"\x7fELF"
    assert b"nodeagent-pause" in data


def test_toolbox_image_layout(built: dict[str, images.BuiltImage]) -> None:
    _, _, config, layer = read_layout(built[images.TOOLBOX_IMAGE].layout)
    assert config["config"]["Cmd"] == ["sh"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        web = tar.extractfile(members["bin/web"]).read().decode()  # type: ignore[union-attr]
        wget = tar.extractfile(members["usr/bin/wget"]).read().decode()  # type: ignore[union-attr]
    assert 'exec timeout "$t" busybox wget' in wget and members["usr/bin/wget"].mode == 0o755
    for applet in ("bin/sh", "usr/sbin/httpd", "usr/bin/nc", "sbin/ip", "usr/bin/nslookup",
                   "bin/sleep", "bin/cat", "bin/echo", "bin/ls", "bin/ps", "bin/hostname", "usr/bin/env"):
        assert members[applet].issym() and members[applet].linkname == "/bin/busybox", applet
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["tmp"].mode == 0o1777
    assert "hostname > /www/index.html" in web and "exec httpd -f" in web
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())


def test_rebuild_is_idempotent_and_reproducible(built: dict[str, images.BuiltImage], tmp_path: Path) -> None:
    cache = built[images.PAUSE_IMAGE].layout.parent
    again = images.build_all(cache)
    assert all(not b.changed for b in again.values())
    assert {n: b.manifest_digest for n, b in again.items()} == {n: b.manifest_digest for n, b in built.items()}
    elsewhere = images.build_all(tmp_path / "other")
    assert all(b.changed for b in elsewhere.values())
    assert {n: b.manifest_digest for n, b in elsewhere.items()} == {n: b.manifest_digest for n, b in built.items()}
    assert (elsewhere[images.TOOLBOX_IMAGE].archive.read_bytes() ==
            built[images.TOOLBOX_IMAGE].archive.read_bytes())


def test_archive_holds_the_layout(built: dict[str, images.BuiltImage]) -> None:
    img = built[images.PAUSE_IMAGE]
    with tarfile.open(img.archive) as tar:
        names = set(tar.getnames())
    blobs = {f"blobs/sha256/{p.name}" for p in (img.layout / "blobs" / "sha256").iterdir()}
    assert names == {"blobs", "blobs/sha256", "index.json", "oci-layout"} | blobs


def test_built_images_reads_the_cache_without_building(built: dict[str, images.BuiltImage],
                                                       tmp_path: Path) -> None:
    cache = built[images.PAUSE_IMAGE].layout.parent
    found = images.built_images(cache)
    assert found is not None
    assert {n: b.manifest_digest for n, b in found.items()} == {n: b.manifest_digest for n, b in built.items()}
    assert images.built_images(tmp_path / "empty") is None


def test_changed_input_changes_the_image(tmp_path: Path) -> None:
    spec = images.ImageSpec(name="nodeagent.local/test:1", entries=[images.Entry("a", "file", 0o644, b"1")])
    first = images.write_layout(spec, tmp_path)
    spec.entries[0].data = b"2"
    second = images.write_layout(spec, tmp_path)
    assert second.changed and second.manifest_digest != first.manifest_digest
    _, _, _, layer = read_layout(second.layout)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.extractfile("a").read() == b"2"  # type: ignore[union-attr]
    # the old blobs are gone with the old layout directory
    assert len(list((second.layout / "blobs" / "sha256").iterdir())) == 3


def test_image_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NODEAGENT_IMAGE_CACHE", str(tmp_path))
    assert images.image_cache_dir() == tmp_path
    monkeypatch.delenv("NODEAGENT_IMAGE_CACHE")
    assert images.image_cache_dir() == images.REPO_ROOT / "build" / "images"


def test_missing_busybox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(images.ImageBuildError, match="busybox-static"):
        images.toolbox_spec(tmp_path / "no-busybox")
