"""One AdmissionReview in, its answer out: the webhook's decisions, with no I/O.

What is checked, and nothing else (the webhook never blocks what it does not
understand):

- a NetworkAttachmentDefinition (``k8s.cni.cncf.io/v1``) on CREATE and UPDATE:
  ``spec.config`` with lint's checks; errors deny, warnings come back as the
  review's ``warnings`` (kubectl prints them). Lines are counted within spec.config.
- a Pod on CREATE: its ``k8s.v1.cni.cncf.io/networks`` annotation; a value Multus
  would refuse denies, keys it ignores warn.
"""

from __future__ import annotations

import json
from typing import Any

from ..lint import Finding, lint_config, networks_findings
from ..lint.pods import NETWORKS

API_VERSION = "admission.k8s.io/v1"
NAD_GROUP = "k8s.cni.cncf.io"
NAD_KIND = "NetworkAttachmentDefinition"
MAX_WARNINGS = 20  # the API server passes them on as HTTP headers: keep them few


class BadReview(ValueError):
    """The body is not an AdmissionReview with a request uid: no review to answer."""


def parse(body: bytes) -> dict[str, Any]:
    """The review's ``request``; BadReview when there is none to answer."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadReview(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("kind") != "AdmissionReview":
        raise BadReview("not an AdmissionReview")
    if document.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion {document.get('apiVersion')!r}: only {API_VERSION} is served")
    request = document.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("an AdmissionReview without request.uid")
    return request


def _field(obj: Any, name: str) -> dict[str, Any]:
    """``obj[name]`` when both are objects, else an empty one."""
    value = obj.get(name) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _nad_findings(request: dict[str, Any]) -> tuple[list[Finding], str]:
    obj = _field(request, "object")
    config = _field(obj, "spec").get("config")
    if not isinstance(config, str) or not config.strip():
        # Multus then reads the network from a file of the node's: nothing to check here
        return [], "spec.config"
    namespace = _field(obj, "metadata").get("namespace")
    if not isinstance(namespace, str):
        namespace = str(request.get("namespace") or "")
    return lint_config(config, namespace), "spec.config"


def _pod_findings(request: dict[str, Any]) -> tuple[list[Finding], str]:
    annotations = _field(_field(request, "object").get("metadata"), "annotations")
    value = annotations.get(NETWORKS)
    if not isinstance(value, str):
        return [], ""
    return networks_findings(value), ""


def findings(request: dict[str, Any]) -> tuple[list[Finding], str]:
    """What lint finds in the reviewed object, and where its lines count from
    ('' when lines mean nothing, as in an annotation)."""
    kind = _field(request, "kind")
    operation = request.get("operation")
    group, name = kind.get("group"), kind.get("kind")
    if group == NAD_GROUP and name == NAD_KIND and operation in ("CREATE", "UPDATE"):
        return _nad_findings(request)
    if group == "" and name == "Pod" and operation == "CREATE":
        return _pod_findings(request)
    return [], ""


def _say(finding: Finding, where: str) -> str:
    return f"{where} line {finding.line}: {finding.message}" if where else finding.message


def answer(uid: str, found: list[Finding], where: str) -> dict[str, Any]:
    """The AdmissionReview sent back: denied with every error, warnings listed."""
    ordered = sorted(found, key=lambda f: f.line)
    errors = [_say(f, where) for f in ordered if f.level == "error"]
    warnings = [_say(f, where) for f in ordered if f.level != "error"]
    if len(warnings) > MAX_WARNINGS:
        more = len(warnings) - MAX_WARNINGS + 1
        warnings = [*warnings[: MAX_WARNINGS - 1], f"{more} more warnings: multihome lint"]
    response: dict[str, Any] = {"uid": uid, "allowed": not errors}
    if errors:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": "multihome: " + "; ".join(errors),
        }
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def allowed_with_warning(uid: str, warning: str) -> dict[str, Any]:
    """Allowed unchecked (e.g. the review ran out of time), and says so."""
    response = {"uid": uid, "allowed": True, "warnings": [warning]}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def review(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one parsed request (see :func:`parse`)."""
    found, where = findings(request)
    return answer(request["uid"], found, where)
