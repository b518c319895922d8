"""OCI image archives for the sandbox node's containerd: deterministic bytes, consistent digests, CRI's names."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from chaoscontour_sandbox import images
from chaoscontour_sandbox.images import Directory, File, ImageSpec, Symlink

ENTRIES = (
    File("/usr/local/bin/envoy", data=b"\x7fELF pretend", mode=0o755),
    Directory("/etc/envoy", mode=0o750, uid=65534, gid=65534),
    File("/etc/envoy/envoy.yaml", data=b"admin: {}\n", mode=0o644, uid=65534, gid=65534),
    Directory("/tmp", mode=0o1777),
    Symlink("/bin/sh", "/usr/local/bin/envoy"),
)
SPEC = ImageSpec(
    reference="envoyproxy/envoy:distroless-v1.38.3",
    entries=ENTRIES,
    entrypoint=("/usr/local/bin/envoy",),
    cmd=("-c", "/etc/envoy/envoy.yaml"),
    env=("ENVOY_UID=65534",),
    workdir="/etc/envoy",
    user="65534:65534",
)


def sha(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def unpack(spec: ImageSpec = SPEC) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
    """index.json's one descriptor, the manifest, the config and the layer, each looked up by digest."""
    index, blobs = images.image_blobs(spec)
    (descriptor,) = json.loads(index)["manifests"]
    manifest = json.loads(blobs[descriptor["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    return descriptor, manifest, config, blobs[manifest["layers"][0]["digest"]]


def members(layer: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return tar.getmembers()


def test_two_builds_give_identical_bytes_and_a_change_gives_another_digest(tmp_path: Path) -> None:
    first = images.write_archive(SPEC, tmp_path / "a.tar")
    second = images.write_archive(SPEC, tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert images.image_blobs(SPEC) == images.image_blobs(SPEC)
    changed = ImageSpec(SPEC.reference, (*ENTRIES[:-1], Symlink("/bin/sh", "/bin/true")), entrypoint=SPEC.entrypoint)
    assert images.write_archive(changed, tmp_path / "c.tar") != first


def test_every_descriptor_carries_its_blobs_digest_and_size() -> None:
    index, blobs = images.image_blobs(SPEC)
    assert all(sha(blob) == digest for digest, blob in blobs.items())
    (descriptor,) = json.loads(index)["manifests"]
    manifest_blob = blobs[descriptor["digest"]]
    assert descriptor["size"] == len(manifest_blob)
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(manifest_blob)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config, (layer,) = manifest["config"], manifest["layers"]
    assert config["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert config["size"] == len(blobs[config["digest"]])
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["size"] == len(blobs[layer["digest"]])
    assert set(blobs) == {descriptor["digest"], config["digest"], layer["digest"]}


def test_diff_id_is_the_uncompressed_layers_digest_and_the_config_says_how_to_run() -> None:
    _, manifest, config, layer = unpack()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha(layer)]}
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    assert "created" not in config
    assert config["config"] == {
        "Entrypoint": ["/usr/local/bin/envoy"],
        "Cmd": ["-c", "/etc/envoy/envoy.yaml"],
        "Env": ["PATH=" + images.DEFAULT_PATH, "ENVOY_UID=65534"],
        "WorkingDir": "/etc/envoy",
        "User": "65534:65534",
    }
    assert layer == images.layer_tar(ENTRIES)


def test_a_given_path_is_kept_and_empty_fields_are_left_out() -> None:
    _, _, config, _ = unpack(ImageSpec("pause", (File("/pause", data=b"x"),), env=("PATH=/bin", "A=1")))
    assert config["config"] == {"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/"}


def test_index_names_the_qualified_reference_and_the_platform() -> None:
    descriptor, _, config, _ = unpack()
    name = "docker.io/envoyproxy/envoy:distroless-v1.38.3"
    assert descriptor["annotations"] == {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
    arch = images.host_architecture()
    assert arch == {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), arch)
    assert descriptor["platform"] == {"architecture": arch, "os": "linux"}
    assert (config["architecture"], config["os"]) == (arch, "linux")
    index, _ = images.image_blobs(SPEC, architecture="arm64")
    assert json.loads(index)["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}


def test_layer_has_parents_first_with_the_given_modes_owners_and_links() -> None:
    got = members(images.layer_tar(ENTRIES))
    names = [m.name for m in got]
    assert names == [
        "bin",
        "bin/sh",
        "etc",
        "etc/envoy",
        "etc/envoy/envoy.yaml",
        "tmp",
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/envoy",
    ]
    for position, name in enumerate(names):
        parent = name.rpartition("/")[0]
        assert not parent or parent in names[:position]
    by_name = {m.name: m for m in got}
    assert all(m.mtime == 0 for m in got)
    for implicit in ("bin", "etc", "usr", "usr/local", "usr/local/bin"):
        assert (by_name[implicit].isdir(), by_name[implicit].mode, by_name[implicit].uid) == (True, 0o755, 0)
    envoy_dir = by_name["etc/envoy"]
    assert (envoy_dir.isdir(), envoy_dir.mode, envoy_dir.uid, envoy_dir.gid) == (True, 0o750, 65534, 65534)
    assert (by_name["tmp"].mode, by_name["tmp"].uid) == (0o1777, 0)
    conf = by_name["etc/envoy/envoy.yaml"]
    assert (conf.isreg(), conf.mode, conf.uid, conf.gid, conf.size) == (True, 0o644, 65534, 65534, 10)
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "/usr/local/bin/envoy"
    with tarfile.open(fileobj=io.BytesIO(images.layer_tar(ENTRIES))) as tar:
        extracted = tar.extractfile("usr/local/bin/envoy")
        assert extracted is not None and extracted.read() == b"\x7fELF pretend"


def test_a_source_file_is_read_when_the_layer_is_built(tmp_path: Path) -> None:
    source = tmp_path / "hello"
    source.write_bytes(b"first")
    entry = File("/hello", source=source, mode=0o700, uid=7, gid=8)
    source.write_bytes(b"second version")
    with tarfile.open(fileobj=io.BytesIO(images.layer_tar([entry]))) as tar:
        info = tar.getmember("hello")
        assert (info.mode, info.uid, info.gid, info.size) == (0o700, 7, 8, 14)
        extracted = tar.extractfile(info)
        assert extracted is not None and extracted.read() == b"second version"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ((File("/a", data=b"1"), File("/a", data=b"2")), "duplicate path in image: /a"),
        ((Directory("/etc"), Directory("/etc", mode=0o700)), "duplicate path in image: /etc"),
        ((Symlink("/lib64", "lib"), File("/lib64/ld.so", data=b"")), "parent /lib64 is not a directory"),
    ],
)
def test_conflicting_paths_are_refused(entries: tuple[images.Entry, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        images.layer_tar(entries)
    with pytest.raises(ValueError, match=message):
        ImageSpec("x", entries)


def test_bad_entries_and_specs_are_refused() -> None:
    for path in ("relative", "/", "/a/../b", "/a/", "/a//b"):
        with pytest.raises(ValueError, match="absolute and normalised"):
            File(path, data=b"")
    with pytest.raises(ValueError, match="exactly one of"):
        File("/a", source=Path("/bin/ls"), data=b"")
    with pytest.raises(ValueError, match="exactly one of"):
        File("/a")
    with pytest.raises(ValueError, match="bad mode"):
        Directory("/a", mode=0o17777)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ImageSpec("x", (), env=("NOEQUALS",))
    with pytest.raises(ValueError, match="lowercase"):
        ImageSpec("X", ())


def test_archive_is_an_oci_layout_with_blobs_named_by_digest(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "envoy.tar"
    digest = images.write_archive(SPEC, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["envoy.tar"]  # the temp file was renamed
    with tarfile.open(out) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert all(m.mtime == 0 for m in tar.getmembers())
    assert json.loads(files.pop("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files.pop("index.json"))
    assert index["manifests"][0]["digest"] == digest
    assert len(files) == 3
    for name, blob in files.items():
        assert name == "blobs/sha256/" + hashlib.sha256(blob).hexdigest()
    assert "blobs/sha256/" + digest.removeprefix("sha256:") in files


@pytest.mark.parametrize(
    ("ref", "qualified"),
    [
        ("foo:1", "docker.io/library/foo:1"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("envoyproxy/envoy:distroless-v1.38.3", "docker.io/envoyproxy/envoy:distroless-v1.38.3"),
        ("ghcr.io/projectcontour/contour:v1.33.6", "ghcr.io/projectcontour/contour:v1.33.6"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("registry.k8s.io/pause", "registry.k8s.io/pause:latest"),
        ("docker.io/foo", "docker.io/library/foo:latest"),
        ("index.docker.io/foo:2", "docker.io/library/foo:2"),
        ("library/foo:2", "docker.io/library/foo:2"),
        ("localhost/foo", "localhost/foo:latest"),
        ("localhost:5000/foo:2", "localhost:5000/foo:2"),
        ("chaoscontour.local/echo/server:dev_1.0", "chaoscontour.local/echo/server:dev_1.0"),
        ("a/b/c:t", "docker.io/a/b/c:t"),
        ("My.Registry:5000/foo", "My.Registry:5000/foo:latest"),
    ],
)
def test_references_are_qualified_as_cri_does(ref: str, qualified: str) -> None:
    assert images.qualified_reference(ref) == qualified
    assert images.qualified_reference(qualified) == qualified


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty"),
        ("Foo:1", "must be lowercase"),
        ("ghcr.io/ProjectContour/contour:v1", "must be lowercase"),
        ("foo bar", "whitespace"),
        ("foo:1\n", "whitespace"),
        ("foo@sha256:" + "a" * 64, "digest references"),
        ("foo:1@sha256:" + "a" * 64, "digest references"),
        ("foo:", "invalid tag"),
        ("foo:-x", "invalid tag"),
        (":1", "invalid repository name"),
        ("/foo", "invalid repository name"),
        ("foo//bar", "invalid repository name"),
        ("-foo", "invalid repository name"),
        ("a" * 64, "64-character hex"),
    ],
)
def test_bad_references_are_refused(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        images.qualified_reference(ref)


def elf_files_exist(files: tuple[File, ...]) -> None:
    for entry in files:
        assert entry.source is not None and entry.source.is_absolute()
        assert not entry.source.is_symlink() and entry.source.resolve() == entry.source
        assert entry.source.read_bytes()[:4] == b"\x7fELF"


def test_a_dynamic_binary_brings_its_loader_and_libraries_at_the_paths_it_asks_for() -> None:
    libs = images.shared_libraries(Path("/bin/ls"))
    names = [lib.name for lib in libs]
    assert "libc.so.6" in names
    assert any(name.startswith("ld-linux") or name.startswith("ld-") for name in names)
    assert not any("vdso" in name for name in names)
    assert all(lib.is_absolute() and lib.exists() for lib in libs)
    assert len(set(libs)) == len(libs)
    files = images.binary_with_libraries(Path("/bin/ls"), "/bin/ls")
    assert files[0].path == "/bin/ls" and files[0].source == Path("/bin/ls").resolve()
    assert [f.path for f in files[1:]] == [str(lib) for lib in libs]
    elf_files_exist(files)
    readelf = shutil.which("readelf")
    interpreter = subprocess.run([readelf, "-l", "/bin/ls"], capture_output=True, text=True).stdout if readelf else ""
    if "interpreter:" in interpreter:  # the loader path is the one the ELF names, not where it resolves to
        wanted = interpreter.split("interpreter:")[1].split("]")[0].strip()
        assert wanted in [f.path for f in files]
    ImageSpec("ls", files, entrypoint=("/bin/ls",))  # no conflicting paths among them


def test_a_static_binary_needs_nothing_and_a_script_is_refused(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    script = tmp_path / "wrapper"
    script.write_text("#!/bin/sh\nexec true\n")
    script.chmod(0o755)
    with pytest.raises(ValueError, match="not an ELF binary"):
        images.shared_libraries(script)
    if gcc is None:
        pytest.skip("gcc is not installed, so no static binary can be built")
    (tmp_path / "uid.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    for flag in ("-static", "-static-pie"):
        binary = tmp_path / f"uid{flag}"
        subprocess.run([gcc, flag, "-o", str(binary), str(tmp_path / "uid.c")], check=True)
        assert images.shared_libraries(binary) == []
        (only,) = images.binary_with_libraries(binary, "/uid")
        assert (only.path, only.source, only.mode) == ("/uid", binary, 0o755)


def test_a_library_the_host_lacks_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so no binary with a missing library can be built")
    (tmp_path / "gone.c").write_text("int gone(void) { return 7; }\n")
    (tmp_path / "main.c").write_text("int gone(void);\nint main(void) { return gone(); }\n")
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(tmp_path / "libgone.so"), str(tmp_path / "gone.c")], check=True)
    binary = tmp_path / "needs-gone"
    subprocess.run([gcc, "-o", str(binary), str(tmp_path / "main.c"), f"-L{tmp_path}", "-lgone"], check=True)
    (tmp_path / "libgone.so").unlink()
    with pytest.raises(RuntimeError, match=r"libgone\.so => not found"):
        images.shared_libraries(binary)
