#!/usr/bin/env bash
# Build the wheel, install it (not editable) with its CPU extra into a fresh venv, and run the whole job from a
# directory outside the repository: embed -> pack (built-in chatml template) -> stats --verify. Proves the package
# is complete as installed (templates are package data) and the console script works. Usage: ci_wheel_check.sh PYTHON
set -euo pipefail
python=${1:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel --no-deps --quiet --wheel-dir "$work/dist" "$repo"
wheel=$(ls "$work"/dist/tfpack-*.whl)
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet torch==2.13.0
"$work/venv/bin/pip" install --quiet "${wheel}[cpu]"

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
"$tfpack" embed chats.jsonl -o run --quiet
"$tfpack" pack run -o packed --tokenizer packaged-minilm --template chatml --max-len 256 --quiet
"$tfpack" stats packed --verify --json > stats.json
"$work/venv/bin/python" - "$repo" <<'PY'
import json, pathlib, sys
import tfpack.tokenize as tokenize

repo = pathlib.Path(sys.argv[1]).resolve()
installed = tokenize.TEMPLATES_DIR.resolve()
assert repo not in installed.parents and "site-packages" in installed.parts, f"templates from {installed}"
manifest = json.loads(pathlib.Path("packed/manifest.json").read_text())
assert manifest["template_source"] == "builtin:chatml", manifest["template_source"]
stats = json.loads(pathlib.Path("stats.json").read_text())
assert stats["verify"]["ok"] and stats["packs"] > 0, stats
print(f"wheel check ok: {pathlib.Path(tokenize.__file__).parent} -> {stats['packs']} packs, verify ok")
PY
