#!/usr/bin/env bash
# Build the wheel, install it (not editable) with its CPU extra into a fresh venv, and run the whole job from a
# directory outside the repository: embed (the default, the static model distilled into an empty cache; and the
# full model, exported to ONNX there) -> pack (built-in chatml template) -> stats --verify. Proves the package is
# complete as installed (templates are package data), its declared dependencies suffice (a full install from the
# wheel's metadata, not a venv sharing the test venv's packages, which would hide a missing one), and the console
# script works. Usage: ci_wheel_check.sh PYTHON
set -euo pipefail
python=${1:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH
export TFPACK_CACHE=$work/cache

fail() { echo "wheel check FAILED: $*" >&2; exit 1; }
"$python" -m pip wheel --no-deps --quiet --wheel-dir "$work/dist" "$repo" || fail "pip wheel"
wheel=$(ls "$work"/dist/tfpack-*.whl)
# Read the listing in one process: `zipfile -l | grep -q` fails under pipefail once grep exits before the listing ends.
python3 -c 'import sys, zipfile; sys.exit("tfpack/packing/templates/chatml.jinja" not in zipfile.ZipFile(sys.argv[1]).namelist())' "$wheel" \
    || fail "$wheel has no tfpack/packing/templates/*.jinja"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip || fail "pip upgrade"
"$work/venv/bin/pip" install --quiet torch==2.13.0 || fail "torch install"
"$work/venv/bin/pip" install --quiet "${wheel}[cpu]" || fail "install of ${wheel}[cpu]"
"$work/venv/bin/pip" check || fail "pip check"
"$work/venv/bin/python" "$repo/ci/versions.py" "wheel check ($(basename "$wheel"))"
echo "wheel check: built and installed in ${SECONDS}s"

cd "$work"
"$work/venv/bin/python" - <<'PY'
import json
topics = ["add {i} and {j}", "write a python function returning {i}", "name the capital of country {i}"]
with open("chats.jsonl", "w") as f:
    for i in range(30):
        prompt = topics[i % 3].format(i=i, j=i + 2)
        f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": f"The answer is {i}."}]}) + "\n")
PY
tfpack=$work/venv/bin/tfpack
"$tfpack" embed chats.jsonl -o run --quiet || fail "tfpack embed"  # auto on CPU, single-exchange: static
"$tfpack" embed chats.jsonl -o run-full --model all-MiniLM-L6-v2 --quiet || fail "tfpack embed --model all-MiniLM-L6-v2"
"$tfpack" pack run -o packed --tokenizer packaged-minilm --template chatml --max-len 256 --quiet || fail "tfpack pack"
"$tfpack" stats packed --verify --json > stats.json || fail "tfpack stats --verify"
"$work/venv/bin/python" - "$repo" <<'PY' || fail "installed package, templates or outputs (above)"
import json, pathlib, sys
import tfpack
import tfpack.packing.tokenizer as tokenize

repo = pathlib.Path(sys.argv[1]).resolve()
installed = tokenize.TEMPLATES_DIR.resolve()
assert repo not in installed.parents and "site-packages" in installed.parts, f"templates from {installed}"
manifest = json.loads(pathlib.Path("packed/manifest.json").read_text())
assert manifest["template_source"] == "builtin:chatml", manifest["template_source"]
embedded = json.loads(pathlib.Path("run/manifest.json").read_text())
assert embedded["model"] == "static", embedded["model"]
assert any(pathlib.Path("cache/static").iterdir()), "no static model distilled into the empty cache"
full = json.loads(pathlib.Path("run-full/manifest.json").read_text())
assert full["backend"] == "openvino", full["backend"]
assert any(pathlib.Path("cache/onnx").rglob("model.onnx")), "no ONNX export in the empty cache"
stats = json.loads(pathlib.Path("stats.json").read_text())
assert stats["verify"]["ok"] and stats["packs"] > 0, stats
assert tfpack.verify("packed").packs == stats["packs"]  # the Python API, from the installed package
print(f"wheel check ok: {pathlib.Path(tokenize.__file__).parent} -> {stats['packs']} packs, verify ok")
PY
echo "wheel check: done in ${SECONDS}s"
