#!/usr/bin/env bash
# Install ckptkeys with its test extras into one virtual environment per CPython 3.10-3.13
# found on this machine (under .venvs/), and run the whole suite in each. On 3.11 it also
# installs torch 2.13.0, DeepSpeed 0.19.8 (DS_BUILD_OPS=0) and safetensors for the cross-checks,
# checks the import contracts of pyproject.toml (lint-imports) and runs mypy --strict for each
# target version 3.10-3.13 over the code and the docs' examples. Set CKPTKEYS_WITH_DEEPSPEED=0 to
# skip torch and DeepSpeed. Under CI=true every interpreter must be present.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
versions=(3.10 3.11 3.12 3.13)
with_deepspeed=${CKPTKEYS_WITH_DEEPSPEED:-1}
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

find_python() {  # $1 = 3.X: an interpreter that runs, from PATH or from pyenv
    local candidate
    for candidate in "$(command -v "python$1" 2>/dev/null || true)" \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$1".*/bin/"python$1"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

pip_quiet() { "$@" 2>&1 | grep -v -e '^WARNING: Location' -e 'is ignored: it is neither' || true; }

ran=0
for version in "${versions[@]}"; do
    if ! python=$(find_python "$version"); then
        if [ "${CI:-}" = "true" ]; then
            echo "error: CPython $version not found" >&2
            exit 1
        fi
        echo "== Python $version: not found, skipped"
        continue
    fi
    venv=$root/.venvs/py$version
    echo "== Python $version ($python)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    pip_quiet "$venv/bin/python" -m pip install -q -e "$root[test,export]"
    "$venv/bin/python" -m pip show ckptkeys >/dev/null
    if [ "$version" = "3.11" ] && [ "$with_deepspeed" != "0" ]; then
        pip_quiet "$venv/bin/python" -m pip install -q torch==2.13.0
        DS_BUILD_OPS=0 pip_quiet "$venv/bin/python" -m pip install -q deepspeed==0.19.8
        # References for ckptkeys export (tests/test_export_deepspeed.py): safetensors' loader, and
        # huggingface_hub's shard split (zero_to_fp32 --safe_serialization needs it too), and
        # transformers (the version that wrote tests/data/clients) to load exports with from_pretrained.
        pip_quiet "$venv/bin/python" -m pip install -q transformers==5.24.0 safetensors==0.8.0 huggingface_hub==2.4.0
        "$venv/bin/python" -c 'import torch, deepspeed, safetensors, huggingface_hub, transformers' 2>/dev/null || {
            echo "error: torch/DeepSpeed/safetensors/huggingface_hub/transformers did not install" >&2
            exit 1
        }
    fi
    if [ "$version" = "3.11" ]; then
        # The architecture (docs/development.md): the import contracts of pyproject.toml.
        echo "-- lint-imports: the layers of src/ckptkeys"
        contracts=$(cd "$root" && COLUMNS=200 "$venv/bin/lint-imports" --no-cache --no-logo 2>&1) || { echo "$contracts"; exit 1; }
        echo "$contracts" | grep -E 'KEPT|BROKEN|^Contracts:' || true
        # mypy's view of StrEnum depends on the target version: check every one users run.
        # The docs' complete examples (marked <!-- mypy -->) are checked with the code.
        "$venv/bin/python" -m tests.doc_examples "$reports/examples" >/dev/null
        for target in "${versions[@]}"; do
            echo "-- mypy --strict --python-version $target: src tests bench scripts, docs examples"
            "$venv/bin/python" -m mypy --python-version "$target" src tests bench scripts "$reports/examples"
        done
    fi
    DS_ACCELERATOR=cpu "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$reports/py$version.xml" \
        "$root/tests"
    ran=$((ran + 1))
done

[ "$ran" -gt 0 ] || { echo "error: no CPython 3.10-3.13 found" >&2; exit 1; }
# One closing line over all interpreters.
python3 - "$reports" <<'PY'
import pathlib, sys, xml.etree.ElementTree as ET
totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for report in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    for key in totals:
        totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"{passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
