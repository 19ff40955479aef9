"""``multihome``: the command for humans. Later features add subcommands here."""

from __future__ import annotations

import argparse

from . import jsonfast, registry, skel


def _cmd_version(_: argparse.Namespace) -> int:
    print(f"multihome {skel.VERSION}")
    print(jsonfast.dumps(skel.version_document()))
    return 0


def _cmd_plugins(_: argparse.Namespace) -> int:
    for name in sorted(registry.PLUGINS):
        print(f"{name}\t{registry.PLUGINS[name]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multihome",
        description="multihome CNI plugins: secondary pod interfaces on VLANs, with routing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "version", help="print the version and the CNI spec versions served"
    ).set_defaults(func=_cmd_version)
    sub.add_parser("plugins", help="list the CNI types this build provides").set_defaults(
        func=_cmd_plugins
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    result: int = ns.func(ns)
    return result
