"""The shipped manifests, checked offline: Kubernetes' schemas and a security lint.

- packaging/kubernetes/*.yaml: strict validation (unknown fields rejected)
  against Kubernetes 1.37's schemas, bundled by PyPI's kubernetes-validate.
- packaging/examples/*.yaml (NetworkAttachmentDefinitions, a CRD that
  Kubernetes' schemas do not hold): the NAD CRD as Multus installs it
  (tests/data/nad-crd.yaml) is itself validated against Kubernetes'
  CustomResourceDefinition schema; each NAD is then validated against that
  CRD's openAPIV3Schema, strictly, with its metadata checked against
  Kubernetes' own ObjectMeta schema. What the schemas cannot see, the CNI
  config inside spec.config, is `multihome lint`'s job (tests/test_examples.py).
- checkov's Kubernetes checks (installed in build/checkov-venv by make): no
  finding may fail; each kept one is skipped by a checkov.io/skip annotation
  whose reason is given again in a comment by the field.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rig import ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S_VERSION = "1.37.0"
MANIFESTS = sorted((ROOT / "packaging" / "kubernetes").glob("*.yaml"))
NADS = sorted((ROOT / "packaging" / "examples").glob("*.yaml"))
CRD = ROOT / "tests" / "data" / "nad-crd.yaml"
CHECKOV = Path(os.environ.get("MULTIHOME_CHECKOV", ROOT / "build" / "checkov-venv/bin/checkov"))


def docs(path: Path) -> list[dict[str, Any]]:
    found = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert found, f"{path}: no documents"
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_kubernetes_schemas(path: Path) -> None:
    for doc in docs(path):
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"


def _objectmeta_validator() -> Any:
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    folder = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = utils.schema_contents(f"{folder}/objectmeta-meta-v1.json", K8S_VERSION)
    defs = utils.schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields, as kubectl's strict field validation does."""
    out = copy.deepcopy(schema)
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
    return out


def test_nad_crd_matches_kubernetes_schema() -> None:
    (crd,) = docs(CRD)
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", NADS, ids=lambda p: p.name)
def test_nad_matches_the_crd_and_objectmeta(path: Path) -> None:
    import jsonschema

    (crd,) = docs(CRD)
    (version,) = crd["spec"]["versions"]
    api_version = f"{crd['spec']['group']}/{version['name']}"
    schema = _strict(version["schema"]["openAPIV3Schema"])
    meta = _objectmeta_validator()
    for doc in docs(path):
        assert doc["apiVersion"] == api_version and doc["kind"] == crd["spec"]["names"]["kind"]
        jsonschema.validate(doc, schema)
        meta.validate(doc["metadata"])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_objectmeta_validation_catches_a_bad_field() -> None:
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        _objectmeta_validator().validate({"name": "x", "lables": {"a": "b"}})
    with pytest.raises(jsonschema.ValidationError):
        _objectmeta_validator().validate({"name": "x", "labels": {"a": 1}})


@pytest.mark.needs_tool(str(CHECKOV))
def test_security_lint_has_no_unexplained_findings() -> None:
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(ROOT / "packaging" / "kubernetes"),
            "--framework",
            "kubernetes",
            "--skip-download",  # offline: no guideline mappings
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = reports[0]["summary"]
    failed = [
        (c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert summary["parsing_errors"] == 0
    # every manifest was read (a file checkov cannot parse is silently left out)
    # a workload counts twice (itself and its pod template), any other object once
    resources = [2 if "template" in d.get("spec", {}) else 1 for p in MANIFESTS for d in docs(p)]
    assert summary["resource_count"] == sum(resources)
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    for check in skipped:
        path = ROOT / check["file_path"].lstrip("/")
        if not path.exists():
            path = ROOT / "packaging" / "kubernetes" / Path(check["file_path"]).name
        text = path.read_text()
        assert text.count(check["check_id"]) >= 2, f"{check['check_id']}: explain it by the field"
    assert summary["passed"] > 100
