#!/usr/bin/env bash
# Lint the pixq Helm chart with helm-sdkpy (Helm's Go library behind a Python API; no
# helm binary needed). helm-sdkpy needs Python >= 3.12: set PYTHON312 or have python3.12
# on PATH / in pyenv. Creates <repo>/.venv-helm on first use.
#
#   deploy/helm/lint.sh                 # lint with values.yaml, then with values-prod.yaml
#   deploy/helm/lint.sh extra-values.yaml ...
#
# Then renders the chart for each values set with Helm's engine (helm_render.py: an
# install against an in-memory fake API server, as helm-sdkpy has no `helm template`)
# into $HELM_RENDER_DIR (default <repo>/build/helm/<name>.yaml: default.yaml,
# values-prod.yaml, ...) and validates the built-in kinds with kubernetes-validate.
# tests/deploy validates the custom resources against shared/crds.
#
# Helm lint fails on any WARNING or ERROR message. helm-sdkpy's lint takes no values
# argument, so each extra values file is merged over values.yaml into a temporary copy
# of the chart (what `helm lint -f FILE` does), and that copy is linted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
chart="$here/pixq"
venv="${HELM_VENV:-$repo/.venv-helm}"
helm_sdkpy_version="${HELM_SDKPY_VERSION:-0.1.32}"

find_python312() {
  if [[ -n "${PYTHON312:-}" ]]; then echo "$PYTHON312"; return 0; fi
  local candidate
  for candidate in python3.12 python3.13; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for candidate in "$root"/versions/3.12*/bin/python3.12 "$root"/versions/3.13*/bin/python3.13; do
      if [[ -x "$candidate" ]]; then echo "$candidate"; return 0; fi
    done
  fi
  return 1
}

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import helm_sdkpy' 2>/dev/null; then
  if ! py312="$(find_python312)"; then
    echo "lint.sh: ERROR: Python >= 3.12 not found (needed by helm-sdkpy); set PYTHON312=/path/to/python3.12" >&2
    exit 2
  fi
  echo "lint.sh: creating $venv with $py312" >&2
  "$py312" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "helm-sdkpy==$helm_sdkpy_version" pyyaml "kubernetes-validate>=1.28"
fi

values_files=("$@")
if [[ ${#values_files[@]} -eq 0 ]]; then
  values_files=("" "$here/values-prod.yaml")
fi

"$venv/bin/python" "$here/helm_lint.py" "$chart" "${values_files[@]}"

render_dir="${HELM_RENDER_DIR:-$repo/build/helm}"
k8s_version="${KUBERNETES_VERSION:-1.30.0}"
mkdir -p "$render_dir"
for values_file in "${values_files[@]}"; do
  if [[ -z "$values_file" ]]; then
    name=default; args=()
  else
    name="$(basename "$values_file" .yaml)"; args=("$values_file")
  fi
  out="$render_dir/$name.yaml"
  "$venv/bin/python" "$here/helm_render.py" "$chart" "$out" "${args[@]}"
  "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet "$out" 2>&1 \
    | grep -v "Couldn't find schema for kind" || true
  # kubernetes-validate exits 0 on missing schemas (custom resources) and non-zero on errors.
  "$venv/bin/kubernetes-validate" --kubernetes-version "$k8s_version" --strict --quiet --no-warn "$out" >/dev/null
  echo "==> kubernetes-validate $k8s_version (strict) OK: $out"
done
echo "helm lint + render: OK"
