"""``multihome webhook`` over real HTTPS, with AdmissionReviews as the API server sends them.

The server is the ``multihome`` command of the build under test (the frozen bundle's
during ``make test-dist``), on 127.0.0.1 at a port it picks; its certificate comes
from a CA this module makes with openssl. Every corpus NAD's verdict and messages
are compared with ``multihome lint``'s on the same file.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from multihome.lib import lint
from multihome.lib.webhook import review, server
from tests.rig import CNIBIN
from tests.skips import SHARED, corpus

CORPUS = SHARED / "nad-corpus"
NAD_KIND = {"group": "k8s.cni.cncf.io", "version": "v1", "kind": "NetworkAttachmentDefinition"}
NAD_RESOURCE = {
    "group": "k8s.cni.cncf.io",
    "version": "v1",
    "resource": "network-attachment-definitions",
}
POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}
NETWORKS = "k8s.v1.cni.cncf.io/networks"


pytestmark = pytest.mark.usefixtures("no_node_etcd_conf")  # nor in the webhook's pod


# ---- a CA and the server's certificates ---------------------------------------------------


class CA:
    """A throwaway CA (openssl, EC P-256) that issues server certificates for 127.0.0.1."""

    def __init__(self, where: Path) -> None:
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-days", "2", "-subj", "/CN=multihome-webhook-test-ca",
                      "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
        self.cert = where / "ca.crt"
        self.serial = 0

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.where)

    def issue(self, cert: Path, key: Path) -> int:
        """A new key and certificate for 127.0.0.1, written over ``cert`` and ``key`` each
        by one rename (as a mounted Secret changes); returns its serial."""
        self.serial += 1
        name = f"server{self.serial}"
        (self.where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-subj", "/CN=multihome-webhook", "-keyout", f"{name}.key",
                      "-out", f"{name}.csr")  # fmt: skip
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-set_serial", str(self.serial), "-days", "2", "-extfile", "san.ext",
                      "-out", f"{name}.crt")  # fmt: skip
        os.replace(self.where / f"{name}.key", key)
        os.replace(self.where / f"{name}.crt", cert)
        return self.serial


@dataclass
class Webhook:
    proc: subprocess.Popen[bytes]
    port: int
    context: ssl.SSLContext
    log: Path

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)

    def post(self, body: bytes, path: str = "/validate") -> tuple[int, bytes]:
        conn = self.connect()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def review(self, document: dict[str, Any]) -> dict[str, Any]:
        status, body = self.post(json.dumps(document).encode())
        assert status == 200, body
        answer = json.loads(body)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == document["request"]["uid"]
        response: dict[str, Any] = answer["response"]
        return response

    def healthy(self) -> bool:
        conn = self.connect()
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()


def start(tmp: Path, cert: Path, key: Path, cafile: Path, drain: str = "0.2") -> Webhook:
    log = tmp / "webhook.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(CNIBIN / "multihome"), "webhook", "--cert", str(cert), "--key", str(key),
             "--listen", "127.0.0.1:0", "--drain", drain],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "MULTIHOME_ETCD_CONF": str(tmp / "no-etcd.conf")},
        )  # fmt: skip
    for _ in range(600):  # its first line names the port it picked
        found = re.search(r"serving AdmissionReviews on \[127\.0\.0\.1\]:(\d+)", log.read_text())
        if found or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert found, log.read_text()
    context = ssl.create_default_context(cafile=str(cafile))
    return Webhook(proc, int(found.group(1)), context, log)


def stop(hook: Webhook) -> None:
    assert hook.proc.poll() is None, f"the webhook died: {hook.log.read_text()}"
    hook.proc.send_signal(signal.SIGTERM)
    hook.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("webhook")
    ca.issue(tmp / "tls.crt", tmp / "tls.key")
    hook = start(tmp, tmp / "tls.crt", tmp / "tls.key", ca.cert)
    yield hook
    stop(hook)


# ---- AdmissionReviews as the API server sends them ---------------------------------------


def admission_review(
    kind: dict[str, str], resource: dict[str, str], obj: dict[str, Any], operation: str
) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": meta.get("name", ""),
            "namespace": meta["namespace"],
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": obj,
            "oldObject": dict(obj) if operation == "UPDATE" else None,
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "UpdateOptions" if operation == "UPDATE" else "CreateOptions",
                "fieldManager": "kubectl-client-side-apply",
                "fieldValidation": "Strict",
            },
        },
    }


def stored(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object as the API server holds it when it calls webhooks: a namespace, a uid,
    a creation time (kubectl's namespace when the file names none)."""
    meta = dict(obj.get("metadata") or {})
    meta.setdefault("namespace", namespace)
    meta.update(uid=str(uuid.uuid4()), creationTimestamp="2026-12-02T00:00:00Z")
    return {**obj, "metadata": meta}


def nad_review(config: Any, namespace: str = "lab", operation: str = "CREATE") -> dict[str, Any]:
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "net1"},
        "spec": {"config": config},
    }
    return admission_review(NAD_KIND, NAD_RESOURCE, stored(nad, namespace), operation)


def pod_review(annotations: dict[str, Any] | None, operation: str = "CREATE") -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "generateName": ""},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    resource = {"group": "", "version": "v1", "resource": "pods"}
    return admission_review(POD_KIND, resource, stored(pod, "lab"), operation)


# ---- the corpus: the webhook says what lint says ------------------------------------------


@dataclass
class Case:
    """One object of a corpus file, what lint found in its lines, and how spec.config's
    lines map to the file's (None: YAML folded spec.config onto one line)."""

    document: dict[str, Any]
    findings: list[lint.Finding]
    config_offset: int | None


def _nad_yaml(text: str) -> str:
    """A conflist file wrapped as a NAD, its text as spec.config's block scalar."""
    body = "".join(f"    {line}\n" if line else "\n" for line in text.split("\n"))
    return (
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n"
        f"metadata:\n  name: corpus\nspec:\n  config: |\n{body}"
    )


def corpus_cases(path: Path, tmp: Path) -> list[Case]:
    """Every NAD (or bare ``spec.config``, as pasted into issues) and annotated Pod."""
    if path.suffix == ".json":  # a conflist as published: applied as a NAD's config
        path = tmp / f"{path.stem}.yaml"
        path.write_text(_nad_yaml((CORPUS / path.name.replace(".yaml", ".json")).read_text()))
    found = lint.lint_file(path)
    try:
        nodes = list(yaml.compose_all(path.read_text(), Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return []  # kubectl cannot read it either
    out = []
    for node in nodes:
        document = yaml.safe_load(yaml.serialize(node)) if node is not None else None
        if not isinstance(document, dict):
            continue
        first, last = node.start_mark.line + 1, node.end_mark.line + 1
        mine = [f for f in found if first <= f.line <= last]
        spec = document.get("spec") or {}
        if document.get("kind") == "Pod":
            out.append(Case(document, mine, None))
        elif document.get("kind", "NetworkAttachmentDefinition") == NAD_KIND["kind"] and (
            "config" in spec
        ):
            config = next(v for k, v in node.value if k.value == "spec").value
            scalar = next(v for k, v in config if k.value == "config")
            block = scalar.style in ("|", ">")
            out.append(Case(document, mine, scalar.start_mark.line + 1 if block else None))
    return out


def corpus_review(case: Case) -> dict[str, Any]:
    document = dict(case.document)
    if document.get("kind") == "Pod":
        return admission_review(POD_KIND, {"group": "", "version": "v1", "resource": "pods"},
                                stored(document, "lab"), "CREATE")  # fmt: skip
    document.setdefault("apiVersion", "k8s.cni.cncf.io/v1")
    document.setdefault("kind", NAD_KIND["kind"])
    document["metadata"] = document.get("metadata") or {"name": "pasted"}
    # kubectl's namespace when the file names none: "lab", which lint's checks treat
    # as it treats no namespace (neither is a namespace that every team shares)
    return admission_review(NAD_KIND, NAD_RESOURCE, stored(document, "lab"), "CREATE")


CORPUS_FILES = sorted(CORPUS.glob("*.yaml")) + sorted(CORPUS.glob("*.json"))


def within(found: list[lint.Finding], offset: int) -> list[int]:
    """Lint's file lines counted within a literal block spec.config; what lint puts on
    the scalar's first line (the "config: |" line of the file) is on its line 1."""
    return sorted(max(1, f.line - offset) for f in found)


def assert_says_what_lint_says(name: str, case: Case, response: dict[str, Any]) -> None:
    errors = [f for f in case.findings if f.level == "error"]
    warnings = [f for f in case.findings if f.level == "warning"]
    assert response["allowed"] == (not errors), (name, response)
    said = response["status"]["message"] if errors else "multihome: "
    assert said.startswith("multihome: ")
    given = response.get("warnings", [])
    if case.document.get("kind") == "Pod":  # an annotation's messages carry no line
        assert said.removeprefix("multihome: ") == "; ".join(f.message for f in errors)
        assert given == [f.message for f in warnings]
        return
    parts = re.split(r"(?:^|; )spec\.config line (\d+): ", said.removeprefix("multihome: "))
    assert sorted(parts[2::2]) == sorted(f.message for f in errors), name
    assert sorted(w.split(": ", 1)[1] for w in given) == sorted(f.message for f in warnings)
    if case.config_offset is not None:  # lines: only a literal block keeps them
        assert [int(n) for n in parts[1::2]] == within(errors, case.config_offset), name
        lines = [int(w.split(" ")[2].rstrip(":")) for w in given]
        assert lines == within(warnings, case.config_offset), name


@corpus(CORPUS)
def test_every_corpus_nad_gets_lints_verdict_and_messages(webhook: Webhook, tmp_path: Path) -> None:
    assert len(CORPUS_FILES) == 40
    counts = {"denied": 0, "allowed": 0, "warned": 0, "not YAML": 0}
    for path in CORPUS_FILES:
        cases = corpus_cases(path, tmp_path)
        if not cases:  # kubectl cannot read it: the API server never sees it
            assert [f.message.split(":")[0] for f in lint.lint_file(path)] == ["not YAML"]
            counts["not YAML"] += 1
        for case in cases:
            response = webhook.review(corpus_review(case))
            assert_says_what_lint_says(path.name, case, response)
            counts["allowed" if response["allowed"] else "denied"] += 1
            counts["warned"] += bool(response.get("warnings"))
    print(f"corpus through the webhook: {counts}")
    assert counts["denied"] >= 15 and counts["allowed"] >= 15 and counts["not YAML"] == 2


def test_lines_are_counted_within_spec_config(webhook: Webhook) -> None:
    config = '{\n  "cniVersion": "1.0.0",\n  "type": "macvlan",\n  # the uplink\n  "master": 1\n}'
    response = webhook.review(nad_review(config))
    assert not response["allowed"]
    assert response["status"]["message"].startswith(
        "multihome: spec.config line 4: spec.config is not JSON: a comment ('# the uplink')"
    )
    assert response["status"]["code"] == 403


def test_a_clean_nad_is_allowed_silently_and_update_is_checked(webhook: Webhook) -> None:
    config = json.dumps({
        "cniVersion": "1.0.0", "type": "mh-macvlan", "master": "eth1",
        "ipam": {"type": "mh-static", "addresses": [{"address": "10.9.0.5/24"}]},
    })  # fmt: skip
    response = webhook.review(nad_review(config))
    assert response["allowed"] and "warnings" not in response and "status" not in response
    bad = nad_review('{"cniVersion": "1.0.0", "type": "route-overwrite"}', operation="UPDATE")
    assert not webhook.review(bad)["allowed"]
    # DELETE is never checked; a NAD without spec.config reads a node's file: allowed
    assert webhook.review(nad_review("{", operation="DELETE"))["allowed"]
    assert webhook.review(nad_review(""))["allowed"]


def test_reference_types_warn_and_warnings_reach_kubectl(webhook: Webhook) -> None:
    config = json.dumps({"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1"})
    response = webhook.review(nad_review(config))
    assert response["allowed"]
    assert response["warnings"] == [
        "spec.config line 1: type macvlan: mh-macvlan is a drop-in with the same keys"
    ]


# ---- pods ---------------------------------------------------------------------------------

GOOD_ANNOTATIONS = [
    "macvlan-conf",
    "macvlan-conf, lab/sriov@net2",
    " other-ns/net-a@eth1 ,net-b ",
    '[{"name": "macvlan-conf", "ips": ["10.1.1.101/24"], "mac": "c2:b0:57:49:47:f1"}]',
    '[{"name": "a", "namespace": "lab", "interface": "net1", "default-route": ["10.1.1.1"]}]',
    "[]",
    "",
]
BAD_ANNOTATIONS = {
    '[{"name": "a"}': "is not JSON",
    "{name: a}": "is not JSON",
    '{"name": "a"}': "must be a JSON list of objects",
    '["a", "b"]': "must be a JSON list of objects",
    '[{"name": "a", "ips": "10.1.1.101/24"}]': '"ips" must be a list',
    "Macvlan-Conf": "is neither JSON nor the short form",
    "ns/net/extra": "is neither JSON nor the short form",
    "net@eth1@eth2": "is neither JSON nor the short form",
    "net_a": "is neither JSON nor the short form",
    "a,,b": "is neither JSON nor the short form",
}


@pytest.mark.parametrize("value", GOOD_ANNOTATIONS)
def test_pod_with_a_good_annotation_is_allowed_silently(webhook: Webhook, value: str) -> None:
    response = webhook.review(pod_review({NETWORKS: value, "other": "x"}))
    assert response["allowed"] and "warnings" not in response


@pytest.mark.parametrize("value", BAD_ANNOTATIONS)
def test_pod_with_a_malformed_annotation_is_denied(webhook: Webhook, value: str) -> None:
    response = webhook.review(pod_review({NETWORKS: value}))
    assert not response["allowed"]
    assert BAD_ANNOTATIONS[value] in response["status"]["message"]
    assert NETWORKS in response["status"]["message"]
    # a pod already running is never blocked: only CREATE is checked
    assert webhook.review(pod_review({NETWORKS: value}, operation="UPDATE"))["allowed"]


def test_pod_keys_multus_ignores_warn(webhook: Webhook) -> None:
    value = '[{"name": "a", "ips": ["10.1.1.5/24"], "gateway": ["10.1.1.1"], "ifname": "n1"}]'
    response = webhook.review(pod_review({NETWORKS: value}))
    assert response["allowed"]
    assert len(response["warnings"]) == 2
    assert "'gateway' is not a Multus key" in response["warnings"][0]
    assert "default-route" in response["warnings"][0]
    assert "'ifname'" in response["warnings"][1]


@pytest.mark.parametrize("annotations", [None, {}, {"other": "x"}, {NETWORKS: 5}])
def test_pod_without_the_annotation_is_allowed(webhook: Webhook, annotations: Any) -> None:
    response = webhook.review(pod_review(annotations))
    assert response == {"uid": response["uid"], "allowed": True}


def test_other_kinds_are_allowed_unread(webhook: Webhook) -> None:
    document = pod_review({NETWORKS: "Bad!"})
    document["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert webhook.review(document)["allowed"]


# ---- bodies that are not reviews ----------------------------------------------------------


def raw_exchange(hook: Webhook, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes over TLS as they are; what comes back before the server closes."""
    with (
        socket.create_connection(("127.0.0.1", hook.port), timeout=30) as plain,
        hook.context.wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head + body)
        out = b""
        try:
            while chunk := tls.recv(65536):
                out += chunk
        except ssl.SSLEOFError:
            pass  # the server closed without a TLS goodbye, as it may after an error
        return out


GARBAGE = [
    b"",
    b"garbage",
    b"\xff\xfe\x00binary",
    b"[" * 100_000,
    b"null",
    b"[]",
    b"{}",
    b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}',
    b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}}',
    b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1",'
    b' "request": {"uid": "x"}}',
]


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_gets_400(webhook: Webhook, body: bytes) -> None:
    status, answer = webhook.post(body)
    assert status == 400 and json.loads(answer)["error"]
    assert webhook.healthy()


@pytest.mark.parametrize(
    "request_",
    [
        {"uid": "u"},
        {"uid": "u", "kind": "NetworkAttachmentDefinition", "object": "x"},
        {"uid": "u", "kind": NAD_KIND, "operation": "CREATE", "object": None},
        {"uid": "u", "kind": NAD_KIND, "operation": "CREATE", "object": {"spec": 5}},
        {"uid": "u", "kind": NAD_KIND, "operation": "CREATE", "object": {"spec": {"config": 5}}},
        {"uid": "u", "kind": POD_KIND, "operation": "CREATE", "object": {"metadata": []}},
        {"uid": "u", "kind": POD_KIND, "operation": "CREATE",
         "object": {"metadata": {"annotations": [NETWORKS]}}},
    ],
)  # fmt: skip
def test_odd_reviews_with_a_uid_are_answered_allowed(
    webhook: Webhook, request_: dict[str, Any]
) -> None:
    document = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    response = webhook.review({**document, "request": request_})
    assert response["allowed"]


def test_config_that_nests_deeply_is_denied_not_crashed(webhook: Webhook) -> None:
    response = webhook.review(nad_review("[" * 50_000 + "]" * 50_000))
    assert not response["allowed"]


def test_oversized_body_gets_413(webhook: Webhook) -> None:
    limit = 4 * 1024 * 1024
    head = (
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(limit + 1).encode() + b"\r\n\r\n"
    )
    assert raw_exchange(webhook, head).startswith(b"HTTP/1.1 413 ")
    try:  # the whole body: the answer may be lost to the reset of what it did not read
        status, _ = webhook.post(b"x" * (limit + 1))
        assert status == 413
    except (ConnectionError, ssl.SSLError):
        pass
    assert webhook.healthy()


def test_requests_that_are_not_reviews(webhook: Webhook) -> None:
    chunked = b"POST /validate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert raw_exchange(webhook, chunked).startswith(b"HTTP/1.1 411 ")
    assert webhook.post(b"{}", "/mutate")[0] == 404
    assert raw_exchange(webhook, b"BREW /validate HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 501 ")
    assert b" 400 " in raw_exchange(webhook, b"\x16\x03garbage\r\n\r\n")  # HTTP/0.9: no head
    conn = webhook.connect()
    conn.request("GET", "/readyz")
    assert conn.getresponse().read() == b"ok\n"
    conn.close()
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=30) as plain:
        plain.sendall(b"POST /validate HTTP/1.1\r\n\r\n")  # plain HTTP: no handshake
        with pytest.raises(ConnectionError):
            assert not plain.recv(100)
            raise ConnectionResetError
    assert webhook.healthy()


def test_keep_alive_serves_many_reviews_on_one_connection(webhook: Webhook) -> None:
    conn = webhook.connect()
    for value in ["a", "B"]:
        document = pod_review({NETWORKS: value})
        conn.request("POST", "/validate", json.dumps(document).encode())
        answer = json.loads(conn.getresponse().read())["response"]
        assert answer["uid"] == document["request"]["uid"]
        assert answer["allowed"] == (value == "a")
    conn.close()


# ---- load, deadline, certificate reload ---------------------------------------------------


def test_200_concurrent_reviews_are_all_answered_correctly(webhook: Webhook) -> None:
    bad = '{"cniVersion": "1.0.0", "type": "mh-macvlan", "master": "eth1", # x\n}'
    good = '{"cniVersion": "1.0.0", "type": "mh-macvlan", "master": "eth1"}'
    documents = []
    for i in range(200):
        if i % 4 == 0:
            documents.append(pod_review({NETWORKS: "Bad!" if i % 8 else "good"}))
        else:
            documents.append(nad_review(bad if i % 3 == 0 else good))
    expected = [
        (d["request"]["uid"], not ("Bad!" in json.dumps(d) or "# x" in json.dumps(d)))
        for d in documents
    ]
    barrier = threading.Barrier(len(documents))

    def one(document: dict[str, Any]) -> tuple[str, bool]:
        barrier.wait()
        response = webhook.review(document)
        return response["uid"], response["allowed"]

    with ThreadPoolExecutor(len(documents)) as pool:
        answers = list(pool.map(one, documents))
    assert answers == expected
    assert sum(allowed for _, allowed in answers) not in (0, len(answers))
    assert webhook.healthy()


def test_a_review_past_its_deadline_is_allowed_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, ca: CA, tmp_path: Path
) -> None:
    """In-process (the review is made slow here): the API server is answered in time."""
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    release = threading.Event()
    monkeypatch.setattr(review, "review", lambda request: release.wait(30) and {})
    certs = server.Certificates(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    hook_server = server.WebhookServer(("127.0.0.1", 0), certs, server.Limits(review_seconds=0.2))
    thread = threading.Thread(target=hook_server.serve_forever, daemon=True)
    thread.start()
    try:
        context = ssl.create_default_context(cafile=str(ca.cert))
        hook = Webhook(None, hook_server.server_address[1], context, tmp_path / "none")  # type: ignore[arg-type]
        response = hook.review(nad_review("{}"))
        assert response["allowed"]
        assert response["warnings"] == [
            "multihome webhook: not checked in time; run multihome lint on it"
        ]
    finally:
        release.set()
        hook_server.shutdown()
        hook_server.server_close()
        hook_server.pool.shutdown()


def served_serial(hook: Webhook) -> int:
    with (
        socket.create_connection(("127.0.0.1", hook.port), timeout=30) as plain,
        hook.context.wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        return int(tls.getpeercert()["serialNumber"], 16)


def test_certificate_is_reloaded_when_its_files_change(ca: CA, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = ca.issue(cert, key)
    hook = start(tmp_path, cert, key, ca.cert)
    try:
        assert served_serial(hook) == first
        second = ca.issue(cert, key)
        assert served_serial(hook) == second
        # a half-written pair (a new key beside the old certificate) is not taken:
        # the previous pair is served until the certificate follows
        spare = tmp_path / "spare"
        spare.mkdir()
        third = ca.issue(spare / "tls.crt", spare / "tls.key")
        os.replace(spare / "tls.key", key)
        assert served_serial(hook) == second
        assert "keeping the previous certificate" in hook.log.read_text()
        os.replace(spare / "tls.crt", cert)
        assert served_serial(hook) == third
        assert hook.review(pod_review({NETWORKS: "a"}))["allowed"]
    finally:
        stop(hook)


def test_sigterm_fails_readiness_then_answers_then_exits(ca: CA, tmp_path: Path) -> None:
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    hook = start(tmp_path, tmp_path / "tls.crt", tmp_path / "tls.key", ca.cert, drain="5")
    conn = hook.connect()
    conn.request("GET", "/readyz")
    assert conn.getresponse().read() == b"ok\n"
    hook.proc.send_signal(signal.SIGTERM)
    for _ in range(200):  # the signal is handled between two polls of the server loop
        conn.request("GET", "/readyz")
        reply = conn.getresponse()
        reply.read()
        if reply.status == 503:
            break
        time.sleep(0.05)
    conn.close()
    assert reply.status == 503
    assert hook.review(pod_review({NETWORKS: "Bad!"}))["allowed"] is False
    assert hook.healthy()
    assert hook.proc.wait(timeout=60) == 0
    assert "SIGTERM: not ready" in hook.log.read_text()


def test_unreadable_certificate_fails_at_start(ca: CA, tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate\n")
    (tmp_path / "tls.key").write_text("not a key\n")
    proc = subprocess.run(
        [str(CNIBIN / "multihome"), "webhook", "--cert", str(tmp_path / "tls.crt"),
         "--key", str(tmp_path / "tls.key"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "multihome webhook:" in proc.stderr


# ---- the manifest and the README's certificates ---------------------------------------

MANIFEST = Path(__file__).resolve().parent.parent / "packaging" / "kubernetes" / "webhook.yaml"
README = MANIFEST.parent.parent.parent / "README.md"


def manifest() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_manifest_runs_this_command_where_the_configuration_calls_it() -> None:
    """(Kubernetes' schemas and checkov check it in tests/test_manifests.py.)"""
    from multihome.lib import cli

    found = manifest()
    deployment, service = found["Deployment"], found["Service"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ns = cli.build_parser().parse_args(container["args"])
    assert ns.func.__name__ == "_cmd_webhook"
    port = server.parse_listen(ns.listen)[1]
    assert container["ports"] == [{"name": "https", "containerPort": port, "protocol": "TCP"}]
    (mount,) = container["volumeMounts"]
    assert {Path(ns.cert), Path(ns.key)} == {
        Path(mount["mountPath"]) / n for n in ("tls.crt", "tls.key")
    }
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "multihome-webhook-tls"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"scheme": "HTTPS", "path": path, "port": "https"}
    assert service["spec"]["ports"][0]["targetPort"] == "https"
    assert found["NetworkPolicy"]["spec"]["ingress"] == [
        {"ports": [{"port": port, "protocol": "TCP"}]}
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "NetworkPolicy", "PodDisruptionBudget"):
        selector = found[kind]["spec"].get("selector") or found[kind]["spec"]["podSelector"]
        assert selector.get("matchLabels", selector).items() <= labels.items(), kind


def test_configuration_sends_nads_and_annotated_pods_and_ignores_failures() -> None:
    found = manifest()
    service = found["Service"]["metadata"]
    nads, pods = found["ValidatingWebhookConfiguration"]["webhooks"]
    for hook in (nads, pods):
        assert hook["failurePolicy"] == "Ignore"
        assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"
        assert hook["clientConfig"]["service"] == {
            "namespace": service["namespace"], "name": service["name"], "path": "/validate",
            "port": found["Service"]["spec"]["ports"][0]["port"],
        }  # fmt: skip
        # the review is decided (or allowed unchecked) before the API server gives up
        assert hook["timeoutSeconds"] > server.Limits().review_seconds
    (rule,) = nads["rules"]
    assert (rule["apiGroups"], rule["apiVersions"]) == ([review.NAD_GROUP], ["v1"])
    assert rule["resources"] == ["network-attachment-definitions"]
    assert rule["operations"] == ["CREATE", "UPDATE"]
    (rule,) = pods["rules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        [""],
        ["pods"],
        ["CREATE"],
    )
    (condition,) = pods["matchConditions"]
    assert condition["expression"] == (
        f"has(object.metadata.annotations) && '{NETWORKS}' in object.metadata.annotations"
    )
    assert NETWORKS == lint.pods.NETWORKS
    injected = found["ValidatingWebhookConfiguration"]["metadata"]["annotations"]
    assert injected["cert-manager.io/inject-ca-from"] == "kube-system/multihome-webhook"


def readme_block(after: str, language: str) -> str:
    text = README.read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


SERVICE_NAME = "multihome-webhook.kube-system.svc"


def test_readme_cert_manager_certificate_names_the_secret_and_the_service() -> None:
    issuer, certificate = yaml.safe_load_all(readme_block("**With cert-manager**", "yaml"))
    spec = certificate["spec"]
    assert spec["secretName"] == "multihome-webhook-tls"
    assert spec["dnsNames"] == [SERVICE_NAME]
    assert spec["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": issuer["kind"]}
    where = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    annotations = manifest()["ValidatingWebhookConfiguration"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == where


def test_readme_openssl_recipe_gives_a_certificate_the_api_server_accepts(tmp_path: Path) -> None:
    """The recipe's openssl steps as written; the webhook serves the result, and a client
    that trusts ca.crt and asks for the Service's name (as the API server does) connects."""
    script = readme_block("**With openssl**", "sh").split("kubectl")[0]
    subprocess.run(["sh", "-ec", script], cwd=tmp_path, check=True, capture_output=True)
    hook = start(tmp_path, tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    try:
        with (
            socket.create_connection(("127.0.0.1", hook.port), timeout=30) as plain,
            hook.context.wrap_socket(plain, server_hostname=SERVICE_NAME) as tls,
        ):
            assert ("DNS", SERVICE_NAME) in tls.getpeercert()["subjectAltName"]
    finally:
        stop(hook)
