"""Lints deploy/helm/portcullis (strict) and renders it with each values file under
deploy/helm/test-values/ into OUT_DIR, one YAML file per values file, for the schema checks in
deploy/validate.sh. Uses helm-python-sdk, which embeds Helm as a native library: no helm binary
and no network.

    python3 deploy/validate/helm.py OUT_DIR
"""

import pathlib
import sys

import helm_python
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "portcullis"
VALUES = ROOT / "helm" / "test-values"


def main(out_dir: str) -> int:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    report = helm_python.lint(str(CHART), strict=True)
    for message in report.get("messages", []):
        # 1 = info (e.g. "icon is recommended"); warnings and errors fail.
        if message.get("severity", 0) >= 2:
            print(f"FAIL helm lint: {message.get('path')}: {message.get('error')}")
            failed += 1
    for error in report.get("errors", []):
        print(f"FAIL helm lint: {error}")
        failed += 1
    if failed == 0:
        print(f"ok   helm lint --strict {CHART.relative_to(ROOT.parent)}")
    rendered = 0
    with helm_python.Chart.load(str(CHART)) as chart:
        for values_file in sorted(VALUES.glob("*.yaml")):
            values = yaml.safe_load(values_file.read_text()) or {}
            try:
                files = chart.render(values, name="demo", namespace="portcullis-demo", is_install=True)
            except helm_python.HelmError as e:
                print(f"FAIL helm template -f {values_file.name}: {e}")
                failed += 1
                continue
            docs = [
                text
                for name, text in sorted(files.items())
                if name.endswith(".yaml") and text.strip()
            ]
            target = out / f"chart-{values_file.stem}.yaml"
            target.write_text("\n---\n".join(docs))
            count = sum(1 for d in yaml.safe_load_all(target.read_text()) if d)
            print(f"ok   helm template -f {values_file.name}: {count} resources -> {target}")
            rendered += 1
    if rendered == 0:
        print("FAIL no values files rendered")
        failed += 1
    print(f"helm: {rendered} rendered, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
