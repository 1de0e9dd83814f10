"""Offline validation of rendered objects: kubernetes-validate for built-in kinds, the
vendored CRDs' openAPIV3Schema (deploy/crds, made strict: unknown fields are errors) for
custom resources, and cert_manager.py's focused schema for cert-manager's Certificate."""

import copy

import jsonschema
import kubernetes_validate

from cert_manager import FOCUSED_SCHEMAS
from deploy_support import KUBERNETES_VERSION, load_crds


def strict_schema(schema: dict) -> dict:
    """Close every object schema that lists properties, so a misspelt field fails.

    The API server would silently prune unknown fields of a structural schema; a typo
    such as ``minReplicaCounts`` should fail here instead.
    """
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            pattern = node.get("pattern")
            if isinstance(pattern, str) and "(?i)" in pattern:
                # Go allows inline flags anywhere; Python only at the start.
                node["pattern"] = "(?i)" + pattern.replace("(?i)", "")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is validated by the API server, not by the CRD schema.
    schema.get("properties", {}).get("metadata", {}).pop("additionalProperties", None)
    return schema


def validate_object(obj: dict) -> None:
    """Raise on the first problem with ``obj``."""
    key = (obj["apiVersion"], obj["kind"])
    crds = load_crds()
    schema = strict_schema(crds[key]) if key in crds else FOCUSED_SCHEMAS.get(key)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is not None:
            raise error
        return
    if "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].split("/")[0].endswith("k8s.io"):
        raise AssertionError(f"no CRD schema for {key}: vendor its CRD in deploy/crds")
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def validation_errors(objs: list[dict]) -> list[str]:
    """One line per object that fails validate_object (empty when all are valid)."""
    errors = []
    for obj in objs:
        try:
            validate_object(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError, AssertionError) as exc:
            errors.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {str(exc)[:400]}")
    return errors
