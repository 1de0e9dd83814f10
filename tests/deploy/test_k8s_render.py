"""Every overlay renders with the pinned kubectl kustomize and validates offline against
kubernetes-validate and the CRD schemas vendored in deploy/crds."""

import jsonschema
import kubernetes_validate
import pytest

from deploy_support import KUBERNETES_VERSION, OVERLAYS, find, kustomize, objects
from k8s_validation import validate_object, validation_errors


def test_base_renders():
    kinds = {o["kind"] for o in kustomize("base")}
    assert {"Deployment", "StatefulSet", "ScaledObject", "PrometheusRule"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate(overlay):
    errors = validation_errors(objects(overlay))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_no_duplicate_objects(overlay):
    seen = set()
    for obj in objects(overlay):
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_namespaced_in_pixq(overlay):
    for obj in objects(overlay):
        if obj["kind"] == "Namespace":
            continue
        assert obj["metadata"].get("namespace") == "pixq", f"{obj['kind']}/{obj['metadata']['name']}"


def test_validators_reject_bad_objects():
    """The checks above can fail: a wrong type and a misspelt CRD field are caught."""
    objs = objects("prod")
    deployment = find(objs, "Deployment", "pixq-api")[0]
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

    scaled = find(objs, "ScaledObject", "pixq-worker")[0]
    scaled["spec"]["minReplicaCounts"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_object(scaled)

    rule = find(objs, "PrometheusRule", "pixq")[0]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(rule)

    certificate = find(objects("helm-tls"), "Certificate", "pixq-nats")[0]
    validate_object(certificate)
    for field, bad in (("dnsName", ["pixq-nats"]), ("usages", ["server-auth"]), ("duration", "90 days")):
        broken = {**certificate, "spec": {**certificate["spec"], field: bad}}
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken)
