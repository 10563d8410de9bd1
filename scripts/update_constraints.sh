#!/usr/bin/env bash
# Move constraints.txt forward: install the newest releases pyproject.toml allows into a fresh virtualenv
# (no constraints), run the default test tier against them, and only when it passes write their versions to
# constraints.txt. Review `git diff constraints.txt`, then commit it with the code it was tested with.
#
#   bash scripts/update_constraints.sh [TORCH_VERSION]     # default: the torch of README's Quick start
set -euo pipefail
cd "$(dirname "$0")/.."
torch="${1:-2.13.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install "torch==$torch" -e ".[dev]"
"$work/venv/bin/python" -m pytest

{
  echo "# The tested versions of every package merge-study installs, torch excepted (pinned on the pip command"
  echo "# line: pip install -c constraints.txt torch==$torch -e \".[dev]\"). Written by scripts/update_constraints.sh."
  "$work/venv/bin/pip" freeze --all --exclude-editable | grep -viE '^(pip|wheel|torch|merge[-_]study)(==| @)'
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins (torch==$torch on the command line)"
