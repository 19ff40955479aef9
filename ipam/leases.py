"""``multihome leases``: who holds what, since when, in either store; and the move to etcd.

``listing`` reads a network's leases from the file store (a node's dataDir)
or from etcd. ``copy_to_etcd`` moves one node's file store into etcd: it
reads both sides first and refuses, writing nothing, when any address or
attachment is already held differently in etcd. Each attachment is then
written with the same create-only transaction an ADD uses, so a pod that
allocates meanwhile can never be given an address being copied, and running
the copy again skips what is already there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from multihome.lib.models import IPAddress

from .config import EtcdSettings
from .etcdstore import EtcdStore, stamp
from .store import FileStore, Owner


@dataclass(frozen=True)
class Lease:
    ip: IPAddress
    container_id: str
    ifname: str
    node: str
    since: str

    def as_dict(self) -> dict[str, str]:
        return {
            "ip": str(self.ip),
            "containerID": self.container_id,
            "ifname": self.ifname,
            "node": self.node,
            "since": self.since,
        }


def file_leases(data_dir: str, network: str, node: str) -> list[Lease]:
    """A node's file store; ``since`` is the lease file's modification time."""
    if not os.path.isdir(os.path.join(data_dir, network)):
        return []
    out = []
    with FileStore(data_dir, network) as store:
        for ip, (cid, ifname) in store.scan():
            try:
                mtime = os.stat(str(ip), dir_fd=store.dfd, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            out.append(Lease(ip, cid, ifname, node, stamp(mtime)))
    return sorted(out, key=_order)


def etcd_leases(store: EtcdStore) -> list[Lease]:
    """Every lease key: each names its holder, its node and since when."""
    out = [Lease(ip, d["id"], d["if"], d["node"], d["since"]) for ip, d in store.leases()]
    return sorted(out, key=_order)


def _ip_order(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)


def _order(lease: Lease) -> tuple[int, int]:
    return _ip_order(lease.ip)


@dataclass
class CopyReport:
    copied: list[Owner] = field(default_factory=list)
    present: list[Owner] = field(default_factory=list)  # in etcd already, the same
    conflicts: list[str] = field(default_factory=list)
    leases: int = 0  # copied, or to copy on a dry run


def copy_to_etcd(
    leases: list[Lease], store: EtcdStore, dry_run: bool = False, legacy_ifname: str = ""
) -> CopyReport:
    """Copy a node's file leases into etcd; refuse all on any conflict."""
    report = CopyReport()
    held = {ip: (doc["id"], doc["if"]) for ip, doc in store.leases()}
    records = dict(store.records())
    wanted: dict[Owner, list[Lease]] = {}
    for lease in leases:
        ifname = lease.ifname or legacy_ifname
        if not ifname:
            report.conflicts.append(
                f"{lease.ip}: a legacy lease of {lease.container_id} without an ifname "
                "(pass --legacy-ifname, e.g. net1)"
            )
            continue
        owner = (lease.container_id, ifname)
        holder = held.get(lease.ip)
        if holder is not None and holder != owner:
            report.conflicts.append(
                f"{lease.ip}: held by {owner[0]}/{owner[1]} here, "
                f"by {holder[0]}/{holder[1]} in etcd"
            )
        wanted.setdefault(owner, []).append(lease)
    for owner, group in wanted.items():
        record = records.get(owner)
        if record is None:
            continue
        ips = sorted({g.ip for g in group}, key=_ip_order)
        if sorted(record.ips, key=_ip_order) == ips:
            report.present.append(owner)
        else:
            report.conflicts.append(
                f"{owner[0]}/{owner[1]}: holds {', '.join(map(str, ips))} here, "
                f"{', '.join(map(str, record.ips)) or 'nothing'} in etcd"
            )
    report.leases = sum(len(g) for o, g in wanted.items() if o not in report.present)
    if report.conflicts or dry_run:
        return report
    for owner, group in wanted.items():
        if owner in report.present:
            continue
        since = min(g.since for g in group)
        if not store.create(owner, [g.ip for g in group], group[0].node, since):
            report.conflicts.append(f"{owner[0]}/{owner[1]}: taken in etcd while copying")
            break
        report.copied.append(owner)
    return report


# ---- where a network's leases are, from a config file or flags ---------------------------


class LeasesError(Exception):
    """A usage or config problem of ``multihome leases`` (exit 2)."""


@dataclass(frozen=True)
class Where:
    network: str
    data_dir: str
    etcd: EtcdSettings | None
    node: str


def ipam_blocks(path: str) -> list[tuple[str, dict[str, object]]]:
    """(network name, ipam config) of each mh-ipam or host-local IPAM in a NAD YAML,
    a conflist or a conf file."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise LeasesError(f"cannot read {path}: {exc.strerror}") from None
    configs: list[tuple[str, object]] = []
    if path.endswith((".conflist", ".conf", ".json")):
        try:
            configs.append(("", json.loads(text)))
        except ValueError as exc:
            raise LeasesError(f"{path} is not JSON: {exc}") from None
    else:
        import yaml

        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise LeasesError(f"{path} is not YAML: {exc}") from None
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "NetworkAttachmentDefinition":
                continue
            name = str((doc.get("metadata") or {}).get("name", ""))
            try:
                configs.append((name, json.loads((doc.get("spec") or {}).get("config", ""))))
            except ValueError:
                raise LeasesError(
                    f"{path}: spec.config of {name} is not JSON (multihome lint says why)"
                ) from None
    out = []
    for fallback, conf in configs:
        if not isinstance(conf, dict):
            continue
        plugins = conf.get("plugins") if "plugins" in conf else [conf]
        for plugin in plugins if isinstance(plugins, list) else []:
            ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
            if isinstance(ipam, dict) and ipam.get("type") in ("mh-ipam", "host-local"):
                out.append((str(conf.get("name") or fallback), ipam))
    return out


def resolve(
    config: str | None,
    network: str | None,
    data_dir: str | None,
    store: dict[str, object] | None,
    node: str | None,
) -> Where:
    """The network and its stores, from ``--config`` and the flags that override it."""
    from pydantic import ValidationError

    from multihome.lib.errors import CNIError
    from multihome.lib.models import describe

    from .config import DEFAULT_DATA_DIR, LeaseStoreConf, etcd_settings

    ipam: dict[str, object] = {}
    if config:
        blocks = ipam_blocks(config)
        chosen = [b for b in blocks if network in (None, b[0])]
        if not chosen:
            names = ", ".join(b[0] for b in blocks) or "none with mh-ipam or host-local"
            raise LeasesError(f"{config}: no network {network or ''} there (found: {names})")
        if len(chosen) > 1:
            names = ", ".join(b[0] for b in chosen)
            raise LeasesError(f"{config} holds several networks ({names}): pick one with --network")
        network, ipam = chosen[0]
    if not network:
        raise LeasesError("name the network: --network NAME, or --config FILE")
    configured = ipam.get("store")
    raw_store: dict[str, object] = dict(configured) if isinstance(configured, dict) else {}
    # --etcd names the etcd on the command line, with its own --ca/--cert/--key: the
    # config's profile does not mix in. Otherwise the node's profile decides, as for mh-ipam.
    direct = bool(store and store.get("endpoints"))
    if direct:
        raw_store = {k: v for k, v in raw_store.items() if k in ("type", "timeout", "node")}
    raw_store.update(store or {})
    if node:
        raw_store["node"] = node
    try:
        conf = LeaseStoreConf.model_validate(raw_store) if raw_store else None
        etcd = etcd_settings(conf, direct=direct)
    except ValidationError as exc:
        raise LeasesError(f"invalid store: {describe(exc)}") from None
    except CNIError as exc:
        raise LeasesError(exc.msg) from None
    directory = data_dir or str(ipam.get("dataDir") or DEFAULT_DATA_DIR)
    return Where(network, directory, etcd, etcd.node if etcd else node or os.uname().nodename)


# ---- the two commands ---------------------------------------------------------------------


def print_listing(where: Where, store: str | None, as_json: bool) -> int:
    """``multihome leases list``: a table (or JSON) of who holds what, since when."""
    import sys

    from multihome.lib import jsonfast

    if store == "etcd" or (store is None and where.etcd is not None):
        if where.etcd is None:
            raise LeasesError("--store etcd needs --etcd URL or a config with an etcd store")
        found = etcd_leases(EtcdStore(where.etcd, where.network))
        source = f"etcd {', '.join(where.etcd.endpoints)}"
    else:
        found = file_leases(where.data_dir, where.network, where.node)
        source = f"the file store in {where.data_dir}"
    if as_json:
        print(jsonfast.dumps([lease.as_dict() for lease in found]))
        return 0
    print(f"# {where.network}: {len(found)} leases in {source}", file=sys.stderr)
    print(f"{'ADDRESS':<26} {'CONTAINER ID':<24} {'IFNAME':<8} {'NODE':<16} SINCE")
    for lease in found:
        cid = lease.container_id
        cid = cid if len(cid) <= 24 else cid[:21] + "..."
        print(f"{lease.ip!s:<26} {cid:<24} {lease.ifname:<8} {lease.node:<16} {lease.since}")
    return 0


def copy_command(where: Where, dry_run: bool, legacy_ifname: str) -> int:
    """``multihome leases copy``: this node's file store into etcd, or a refusal."""
    import sys

    if where.etcd is None:
        raise LeasesError("copy needs an etcd store: a config with one, or --etcd URL")
    found = file_leases(where.data_dir, where.network, where.node)
    store = EtcdStore(where.etcd, where.network)
    report = copy_to_etcd(found, store, dry_run, legacy_ifname)
    for line in report.conflicts:
        print(f"conflict: {line}", file=sys.stderr)
    if report.conflicts:
        done = f"{len(report.copied)} attachments copied before it" if report.copied else ""
        print(f"multihome leases: refused; {done or 'nothing written'}", file=sys.stderr)
        return 1
    verb = "would copy" if dry_run else "copied"
    print(
        f"{where.network}: {verb} {report.leases} leases of node {where.node} "
        f"from {where.data_dir} to etcd ({len(report.present)} attachments were there already)"
    )
    return 0
