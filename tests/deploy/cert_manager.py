"""A focused JSON schema for cert-manager's ``Certificate`` (cert-manager.io/v1).

cert-manager's CRD is not vendored (deploy/crds/README.md): no PyPI or npm package ships
it. This schema is written by hand from the cert-manager.io/v1 API (the field names and
enums as published in the npm package @kubernetes-models/cert-manager 6.0.0, generated from
cert-manager's Go types). It lists every top-level spec field, so a misspelt one fails, and
types the fields the chart sets in full. It is not the upstream schema: nested objects the
chart does not use are only checked to be objects.
"""

DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"}
KEY_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
]
STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
OBJECT = {"type": "object"}

CERTIFICATE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": OBJECT,
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "anyOf": [{"required": ["dnsNames"]}, {"required": ["commonName"]},
                      {"required": ["ipAddresses"]}, {"required": ["uris"]},
                      {"required": ["emailAddresses"]}, {"required": ["literalSubject"]},
                      {"required": ["otherNames"]}],
            "properties": {
                "secretName": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "issuerRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string", "minLength": 1},
                                   "kind": {"type": "string"}, "group": {"type": "string"}},
                },
                "dnsNames": {**STRINGS, "minItems": 1},
                "ipAddresses": STRINGS,
                "uris": STRINGS,
                "emailAddresses": STRINGS,
                "commonName": {"type": "string", "maxLength": 64},
                "literalSubject": {"type": "string"},
                "duration": DURATION,
                "renewBefore": DURATION,
                "renewBeforePercentage": {"type": "integer", "minimum": 1, "maximum": 99},
                "privateKey": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                                   "encoding": {"enum": ["PKCS1", "PKCS8"]},
                                   "rotationPolicy": {"enum": ["Never", "Always"]},
                                   "size": {"type": "integer"}},
                },
                "usages": {"type": "array", "items": {"enum": KEY_USAGES}},
                "isCA": {"type": "boolean"},
                "encodeUsagesInRequest": {"type": "boolean"},
                "revisionHistoryLimit": {"type": "integer", "minimum": 1},
                "signatureAlgorithm": {"type": "string"},
                "subject": OBJECT,
                "secretTemplate": OBJECT,
                "keystores": OBJECT,
                "additionalOutputFormats": {"type": "array", "items": OBJECT},
                "nameConstraints": OBJECT,
                "otherNames": {"type": "array", "items": OBJECT},
            },
        },
    },
}

FOCUSED_SCHEMAS = {("cert-manager.io/v1", "Certificate"): CERTIFICATE_SCHEMA}
