"""Run Helm's lint (through helm-sdkpy) on a chart, once per values file.

Usage: helm_lint.py CHART [VALUES_FILE|'' ...]   ('' = the chart's own values.yaml)

Exit status 1 if any lint message is a warning or an error. Used by deploy/helm/lint.sh.
"""

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

# helm.sh/helm/v4/pkg/chart/common/util: UnknownSev, InfoSev, WarningSev, ErrorSev
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def deep_merge(base, override):
    """Helm's values coalescing: maps merge recursively, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else value
        return merged
    return override


def chart_with_values(chart: Path, values_file: Path, workdir: Path) -> Path:
    copy = workdir / chart.name
    shutil.copytree(chart, copy)
    base = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    extra = yaml.safe_load(values_file.read_text()) or {}
    (copy / "values.yaml").write_text(yaml.safe_dump(deep_merge(base, extra), sort_keys=False))
    return copy


async def lint(path: Path) -> dict:
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="pixq")
    return await helm_sdkpy.Lint(config).run(str(path))


def messages(result) -> list[tuple[int, str, str]]:
    out = []
    for msg in (result or {}).get("Messages") or []:
        sev = msg.get("Severity", 0)
        out.append((sev, msg.get("Path", ""), str(msg.get("Err"))))
    for err in (result or {}).get("Errors") or []:
        out.append((3, "", str(err)))
    return out


def explain_schema_errors(chart: Path) -> None:
    try:
        import jsonschema
    except ImportError:
        return
    schema_file = chart / "values.schema.json"
    if not schema_file.exists():
        return
    values = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    validator = jsonschema.Draft7Validator(json.loads(schema_file.read_text()))
    for error in validator.iter_errors(values):
        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
        print(f"  values.schema.json: {where}: {error.message}")


def main(argv: list[str]) -> int:
    chart = Path(argv[1]).resolve()
    values_files = argv[2:] or [""]
    failed = False
    for values_file in values_files:
        label = values_file or "values.yaml (defaults)"
        with tempfile.TemporaryDirectory(prefix="pixq-helm-lint-") as tmp:
            target = chart if not values_file else chart_with_values(chart, Path(values_file).resolve(), Path(tmp))
            result = asyncio.run(lint(target))
            found = messages(result)
            bad = [m for m in found if m[0] >= 2]
            print(f"==> helm lint {chart.name} with {label}: "
                  f"{len(bad)} warning/error message(s), {len(found) - len(bad)} info")
            for sev, path, err in found:
                print(f"  [{SEVERITY.get(sev, sev)}] {path}: {err}")
            if bad:
                failed = True
                # helm-sdkpy serialises Go errors as {}: say what the schema rejects.
                explain_schema_errors(target)
                print(json.dumps(result, indent=2, default=str)[:4000])
    print("helm lint: FAILED" if failed else "helm lint: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
