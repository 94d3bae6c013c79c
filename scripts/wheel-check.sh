#!/usr/bin/env bash
# Build a wheel from this repository, install it into a fresh venv, and use it from a folder
# outside the clone, as a user who ran `pip install robench-*.whl` would:
#   robench list, python -m robench, evaluate with a model from a file of one's own, report,
#   check, and the Python API. CI runs it; it leaves nothing behind but its temporary folder.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/robench-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
py="${PYTHON:-python3}"
"$py" -m pip wheel -q --no-deps --no-build-isolation "$repo" -w "$work/dist" 2>/dev/null \
  || "$py" -m pip wheel -q --no-deps "$repo" -w "$work/dist"
wheel="$(ls "$work"/dist/robench-*.whl)"
# The listing goes to a file first: `unzip -l | grep -q` under pipefail fails whenever grep exits
# before unzip has written everything (SIGPIPE), which depends on timing.
unzip -l "$wheel" > "$work/listing.txt"
for card in defenses/none.toml attacks/quick.toml; do  # the cards travel in the wheel
  grep -q "data/data/share/robench/$card" "$work/listing.txt" || { echo "wheel lacks $card" >&2; exit 1; }
done
# so do the shipped weights, every file the manifest lists
for file in manifest.json $(sed -n 's/^ *"file": "\(.*\)",$/\1/p' "$repo/robench/zoo/weights/manifest.json"); do
  grep -q " robench/zoo/weights/$file\$" "$work/listing.txt" || { echo "wheel lacks robench/zoo/weights/$file" >&2; exit 1; }
done
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "torch==2.13.0"
"$work/venv/bin/python" -m pip install -q "$wheel"
mkdir "$work/user"
cd "$work/user"
export ROBENCH_CACHE="$work/cache" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
bin="$work/venv/bin"
"$bin/robench" list > list.txt
grep -q "^  none " list.txt && grep -q "^  quick " list.txt || { echo "robench list shows no cards" >&2; cat list.txt >&2; exit 1; }
"$bin/python" -m robench --help > /dev/null
"$bin/robench" zoo list > zoo.txt  # an empty cache: the shipped models are there, checked against their hashes
grep -q "^cnn  *classifier  *shipped " zoo.txt || { echo "robench zoo list shows no shipped cnn" >&2; cat zoo.txt >&2; exit 1; }
cat > mymodels.py <<'PY'
import torch
from torch import nn


def net(data):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
PY
"$bin/robench" evaluate --model mymodels.py:net --defense none --suite quick --n-examples 8 --no-diagnostics --quiet --out run
"$bin/robench" report run > /dev/null
"$bin/robench" check run --baseline baseline.csv --update-baseline > /dev/null
"$bin/robench" check run --baseline baseline.csv > check.txt
grep -q "^1 of 1 row(s) matched" check.txt || { cat check.txt >&2; exit 1; }
"$bin/python" - <<'PY'
import torch
import robench
from mymodels import net
x, y = torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
evaluation = robench.evaluate(net(None), x, y, suite="quick", epsilons=(0.1,), diagnostics=False, progress=False)
assert "worst-case" in set(evaluation.results["attack"]), evaluation.results
PY
echo "wheel check passed: $(basename "$wheel") installed and used from a folder outside the clone"
