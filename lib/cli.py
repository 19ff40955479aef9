"""``multihome``: the command for humans. Later features add subcommands here."""

from __future__ import annotations

import argparse
import sys

from . import buildinfo, jsonfast, registry, skel


def _cmd_version(_: argparse.Namespace) -> int:
    print(f"multihome {buildinfo.VERSION}")
    print(jsonfast.dumps(skel.version_document()))
    return 0


def _cmd_plugins(_: argparse.Namespace) -> int:
    for name in sorted(registry.PLUGINS):
        print(f"{name}\t{registry.PLUGINS[name]}")
    return 0


def _cmd_routes(ns: argparse.Namespace) -> int:
    from multihome.plugins import routesets

    try:
        routes = routesets.nad_routes(ns.preset, ns.exclude, ns.via)
    except ValueError as exc:
        print(f"multihome routes: {exc}", file=sys.stderr)
        return 2
    if ns.format == "table":
        for route in routes:
            print(f"{route['dst']:<20} {route.get('gw', '')}")
        print(f"# {len(routes)} routes", file=sys.stderr)
    else:
        lines = ",\n".join(f"  {jsonfast.dumps(r)}" for r in routes)
        print(f"[\n{lines}\n]")
    return 0


def _cmd_install(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from . import install

    dest = Path(ns.dest)
    if ns.uninstall:
        removed = install.uninstall(dest)
        print(f"multihome: removed {', '.join(removed) or 'nothing'} from {dest}", flush=True)
    else:
        source = Path(ns.source) if ns.source else install.default_source()
        changes = install.install(source, dest)
        summary = "; ".join(changes) if changes else "already installed"
        print(f"multihome: {summary} in {dest}", flush=True)
    if ns.then_sleep:  # a DaemonSet container: stay up until the pod is stopped
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    return 0


def _cmd_lint(ns: argparse.Namespace) -> int:
    import ipaddress
    from pathlib import Path

    from . import lint

    try:
        cluster = [ipaddress.ip_network(c, strict=False) for c in ns.cluster_cidr]
    except ValueError as exc:
        print(f"multihome lint: --cluster-cidr: {exc}", file=sys.stderr)
        return 2
    failed = False
    for name in ns.files:
        if ns.fix:
            from .lint import fix

            done = fix.fix_file(Path(name))
            if done:
                print(lint.format_findings(name, done))
        findings = lint.lint_file(Path(name), cluster)
        if findings:
            print(lint.format_findings(name, findings))
        failed |= any(f.level == "error" for f in findings)
    return 1 if failed else 0


def _cmd_daemon(ns: argparse.Namespace) -> int:
    from . import log
    from .thick import daemon, shim

    log.configure("multihome-daemon")
    stall = dict(item.split("=", 1) for item in ns.test_stall)
    daemon.Daemon(
        ns.socket or shim.DEFAULT_SOCKET, {k: float(v) for k, v in stall.items()}
    ).serve_forever(ns.grace)
    return 0


def _cmd_probe(ns: argparse.Namespace) -> int:
    from .thick import probe, shim

    return probe.main(ns.socket or shim.DEFAULT_SOCKET)


def _cmd_webhook(ns: argparse.Namespace) -> int:
    from . import log
    from .webhook import server

    log.configure("multihome-webhook")
    limits = server.Limits(max_body=ns.max_body, review_seconds=ns.review_timeout)
    try:
        server.serve(ns.listen, ns.cert, ns.key, limits, ns.drain)
    except (OSError, ValueError) as exc:  # an unreadable pair, a port in use
        print(f"multihome webhook: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_leases(ns: argparse.Namespace) -> int:
    from multihome.ipam import leases

    from .errors import CNIError

    store: dict[str, object] = {}
    if ns.etcd:
        store = {"type": "etcd", "endpoints": ns.etcd}
    for key, value in (("prefix", ns.prefix), ("timeout", ns.timeout)):
        if value is not None:
            store[key] = value
    tls = {k: v for k, v in (("ca", ns.ca), ("cert", ns.cert), ("key", ns.key)) if v}
    if tls:
        store["tls"] = tls
    try:
        where = leases.resolve(ns.config, ns.network, ns.data_dir, store, ns.node)
        if ns.action == "list":
            return leases.print_listing(where, ns.store, ns.json)
        return leases.copy_command(where, ns.dry_run, ns.legacy_ifname)
    except leases.LeasesError as exc:
        print(f"multihome leases: {exc}", file=sys.stderr)
        return 2
    except CNIError as exc:
        details = f" ({exc.details})" if exc.details else ""
        print(f"multihome leases: {exc.msg}{details}", file=sys.stderr)
        return 1


def _add_webhook(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hook = sub.add_parser(
        "webhook",
        help="serve lint's checks to the API server (a validating admission webhook)",
        description="An HTTPS server for admission.k8s.io/v1 AdmissionReviews on POST "
        "/validate: NetworkAttachmentDefinitions get multihome lint's checks (errors deny, "
        "warnings are returned), Pods their k8s.v1.cni.cncf.io/networks annotation. "
        "GET /healthz and /readyz. The certificate and key are reloaded when they change.",
    )
    hook.add_argument("--cert", required=True, metavar="FILE", help="PEM certificate (chain)")
    hook.add_argument("--key", required=True, metavar="FILE", help="PEM private key")
    hook.add_argument("--listen", default=":8443", metavar="HOST:PORT", help="default :8443")
    hook.add_argument(
        "--max-body",
        type=int,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="larger reviews get 413 (default 4 MiB)",
    )
    hook.add_argument(
        "--review-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="a review not decided by then is allowed, with a warning (default 3)",
    )
    hook.add_argument(
        "--drain",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="on SIGTERM, /readyz fails and reviews are answered this long more (default 3)",
    )
    hook.set_defaults(func=_cmd_webhook)


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
    routes = sub.add_parser(
        "routes",
        help="print a computed route set as a NAD 'routes' array",
        description="Compute a route set (a universe minus exclusions, aggregated to the "
        "minimal CIDR list) and print it ready to paste into a NAD's ipam.routes.",
    )
    routes.add_argument(
        "--preset",
        action="append",
        required=True,
        help="public-ipv4, global-ipv4, default-ipv6 or global-ipv6 (repeatable)",
    )
    routes.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="CIDR",
        help="a range to keep off the set, e.g. your pod or service CIDR",
    )
    routes.add_argument(
        "--via",
        action="append",
        default=[],
        metavar="GATEWAY",
        help="the gateway of each family (two of a family give ECMP)",
    )
    routes.add_argument("--format", choices=("json", "table"), default="json")
    routes.set_defaults(func=_cmd_routes)
    inst = sub.add_parser(
        "install",
        help="install the frozen plugins into a CNI directory, atomically",
        description="Copy this bundle into DEST/.multihome/ and point a symlink per CNI type "
        "at it. Upgrades swap one symlink; re-running changes nothing.",
    )
    inst.add_argument("--dest", required=True, help="the node's CNI bin directory")
    inst.add_argument("--source", help="the bundle directory (default: the running bundle)")
    inst.add_argument("--uninstall", action="store_true", help="remove what install put there")
    inst.add_argument(
        "--then-sleep",
        action="store_true",
        help="then wait for SIGTERM (as a DaemonSet's container)",
    )
    inst.set_defaults(func=_cmd_install)
    lint = sub.add_parser(
        "lint",
        help="check NetworkAttachmentDefinition YAML or conflists for faults",
        description="Report invalid JSON in spec.config, unknown keys, route sets that send "
        "private space through the secondary gateway or miss public space, overlapping "
        "ranges, gateways outside their subnet and missing masters. Exits 1 on errors.",
    )
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument(
        "--cluster-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="the cluster's own pod or service CIDR (repeat): a route sending it through the "
        "secondary gateway is an error; other private space is a warning",
    )
    lint.add_argument(
        "--fix",
        action="store_true",
        help="rewrite each file in place first: reference types become multihome's, a pasted "
        "public route list the preset that equals it (comments and layout are kept)",
    )
    lint.set_defaults(func=_cmd_lint)
    dmn = sub.add_parser(
        "daemon",
        help="serve plugin calls from a warm process (thick mode)",
        description="Keep the plugins warm and serve the CNI binaries (shims) on a root-only "
        "Unix socket. The binaries use it when it is there (MULTIHOME_SOCKET names another "
        "path) and run the plugin themselves when it is not.",
    )
    dmn.add_argument("--socket", help="default /run/multihome/multihome.sock")
    dmn.add_argument(
        "--test-stall",
        action="append",
        default=[],
        metavar="PLUGIN=SECONDS",
        help=argparse.SUPPRESS,
    )
    dmn.add_argument(
        "--grace",
        type=float,
        default=25.0,
        help="on SIGTERM, how long in-flight calls may take to finish (default 25 s)",
    )
    dmn.set_defaults(func=_cmd_daemon)
    prb = sub.add_parser(
        "probe",
        help="exit 0 when the daemon answers a real call on its socket (a DaemonSet probe)",
        description="Send the daemon a STATUS call of the built-in mh-noop plugin, as a "
        "shim would. Exits 1 when there is no daemon, a stale socket, a daemon of another "
        "build, or the call fails.",
    )
    prb.add_argument("--socket", help="default /run/multihome/multihome.sock")
    prb.set_defaults(func=_cmd_probe)
    _add_webhook(sub)
    lea = sub.add_parser(
        "leases",
        help="list a network's leases (file store or etcd), or copy a node's into etcd",
        description="list: who holds which address of a network, on which node, since when. "
        "copy: move this node's file store (dataDir) into the network's etcd store; it "
        "refuses, writing nothing, if etcd holds any of those addresses or attachments "
        "differently, and skips what is there already. The network and its stores come "
        "from --config (a NAD YAML, conflist or conf) and the flags that override it.",
    )
    lea.add_argument("action", choices=("list", "copy"))
    lea.add_argument("--config", metavar="FILE", help="a NAD YAML, .conflist or .conf")
    lea.add_argument("--network", help="the network name (when FILE has several, or no FILE)")
    lea.add_argument("--store", choices=("file", "etcd"), help="list: which store to read")
    lea.add_argument("--data-dir", metavar="DIR", help="the file store (default: dataDir)")
    lea.add_argument("--etcd", action="append", metavar="URL", help="an etcd endpoint")
    lea.add_argument("--prefix", help="the etcd key prefix (default /multihome/ipam)")
    lea.add_argument("--timeout", type=float, help="seconds to wait for etcd (default 5)")
    lea.add_argument("--ca", help="CA bundle for https endpoints")
    lea.add_argument("--cert", help="client certificate for https endpoints")
    lea.add_argument("--key", help="client key for https endpoints")
    lea.add_argument(
        "--node", help="copy: the node the leases are recorded for (default: hostname)"
    )
    lea.add_argument(
        "--legacy-ifname",
        default="",
        metavar="IFNAME",
        help="copy: the ifname for legacy host-local leases, which hold only an ID",
    )
    lea.add_argument("--dry-run", action="store_true", help="copy: check, write nothing")
    lea.add_argument("--json", action="store_true", help="list: JSON instead of a table")
    lea.set_defaults(func=_cmd_leases)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    result: int = ns.func(ns)
    return result
