"""The runtime's subcommands are registered with the flags docs/components.md promises."""

from __future__ import annotations

from nodeagent.cli import build_parser
from nodeagent.runtime import command


def test_containerd_flags() -> None:
    args = build_parser().parse_args(["containerd", "--data-dir", "/d", "--netns", "n1", "--stream-port", "5"])
    assert args.func is command.containerd_main
    assert (args.data_dir, args.netns, args.stream_port, args.keep_pods) == ("/d", "n1", 5, False)


def test_images_build_flags() -> None:
    args = build_parser().parse_args(["images", "build", "--import", "/run/c.sock"])
    assert args.func is command.images_build_main
    assert args.import_socket == "/run/c.sock"
    assert build_parser().parse_args(["images", "build"]).import_socket is None
