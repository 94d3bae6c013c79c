#!/usr/bin/env bash
# Create ./.venv (or reuse the active virtualenv) and install robench into it.
#   bash scripts/setup.sh          # robench itself
#   bash scripts/setup.sh test     # plus the test extras
# torch is installed first, pinned to 2.13.0: where its CPU build lies on local disk (as on this
# project's machines) pip takes it in seconds instead of pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  py=.venv/bin/python
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$py" -c "import torch" 2>/dev/null; then
  "$py" -m pip install -q "torch==2.13.0"
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
# compat: a path entry on sys.path rather than an import hook, so that a folder named robench in
# the current directory (the clone itself, seen from its parent) can never shadow the package
"$py" -m pip install -q -e "$target" --config-settings editable_mode=compat
echo "robench installed in $("$py" -c 'import sys; print(sys.prefix)')" >&2
