#!/usr/bin/env bash
# GPU check (issue 17 item 6): prepared here, run in ONE call on a lent GPU machine. See bench/gpu_check.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PREP=.gpu-check                       # ignored (.gitignore); carried to the GPU machine as a whole
LIMIT_BYTES=$((40 * 1024 * 1024))     # wheels + zoo copy + tracked tree: far under the tool's 64 MiB
ZOO_MODELS=(base add capital first)   # what bench/gpu_check.py merges and scores (EXPERTS there)
PY_TAGS=(--python-version 3.12 --implementation cp --only-binary=:all:
         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
         --platform manylinux1_x86_64 --platform any)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

usage() {
  cat <<'EOF'
usage: bash bench/gpu_check.sh --prepare | --cpu | --gpu | --help

  --prepare  HERE (main venv, registry reachable): copy the zoo's base and 3 experts into .gpu-check/zoo, run
             the check on the CPU against that copy while recording every distribution it imports, download
             wheels (pip download --no-deps, Python 3.12 / manylinux) of exactly those the GPU image lacks into
             .gpu-check/wheels, check they install for cp312, check the size, write .gpu-check/manifest.json.
  --cpu      HERE: the same checks with device cpu against cpu (degenerate; proves every code path runs).
             JSON: .gpu-check/out-cpu/gpu_check.json
  --gpu      ON THE GPU MACHINE: install the wheelhouse (--no-index --no-deps, into /tmp), put the repo on
             PYTHONPATH, run the checks on cuda (at most ~7 min), JSON: $OUT/gpu_check.json.

The coordinator's call, after `bash bench/gpu_check.sh --prepare` here (device tool `run`):
    command:   bash bench/gpu_check.sh --gpu
    carry:     [".gpu-check"]
    timeout_s: 480
Then copy $OUT/gpu_check.json's numbers into bench/RESULTS.md ("GPU" section), and feed the measured SVD time
to the cost model: python bench/cost_model.py --gpu-check <files_at>/gpu_check.json
EOF
}

die() { echo "gpu_check.sh: $*" >&2; exit 2; }

prepare() {
  local py=.venv/bin/python
  [[ -x $py ]] || die "$py not found: install the project first (README, Quick start)"
  local zoo_dir name
  zoo_dir="$($py -c 'from study.zoo import load_zoo; print(load_zoo().path)')" \
    || die "no mini zoo here: run \`merge-study zoo build\` first"
  name="$(basename "$zoo_dir")"
  rm -rf "$PREP"
  mkdir -p "$PREP/wheels" "$PREP/zoo/$name/models"
  cp "$zoo_dir/manifest.json" "$PREP/zoo/$name/"
  cp -r "$zoo_dir/data" "$PREP/zoo/$name/"
  for m in "${ZOO_MODELS[@]}"; do cp -r "$zoo_dir/models/$m" "$PREP/zoo/$name/models/"; done

  echo "== CPU run on the copied zoo, recording imports"
  $py bench/gpu_check.py --device cpu --zoo-root "$PREP/zoo" --out "$PREP/out-prepare" \
      --imports-out "$PREP/imports.json" >"$PREP/out-prepare.log" 2>&1 \
    || { tail -30 "$PREP/out-prepare.log"; die "the CPU run failed (log: $PREP/out-prepare.log)"; }

  echo "== wheels of what the GPU image lacks"
  local spec kind
  $py bench/gpu_check.py --missing "$PREP/imports.json" >"$PREP/missing.txt"
  while read -r spec kind; do
    echo "   $spec ($kind)"
    if ! $py -m pip download -q --no-deps "${PY_TAGS[@]}" -d "$PREP/wheels" "$spec" 2>"$PREP/pip.err"; then
      # A pure-Python project published only as a source archive: build its wheel here (py3-none-any).
      [[ $kind == pure ]] || { cat "$PREP/pip.err"; die "no cp312 manylinux wheel of $spec"; }
      $py -m pip wheel -q --no-deps -w "$PREP/wheels" "$spec" || die "cannot build a wheel of $spec"
    fi
  done <"$PREP/missing.txt"

  echo "== the wheels install for CPython 3.12 (as on the GPU machine), one version each"
  local dupes
  dupes="$(ls "$PREP/wheels" | sed 's/-[0-9].*//' | tr 'A-Z_.' 'a-z--' | sort | uniq -d)"
  [[ -z $dupes ]] || die "two versions of: $dupes"
  local tmp
  tmp="$(mktemp -d)"
  $py -m pip install -q --no-index --no-deps --target "$tmp" "${PY_TAGS[@]}" "$PREP"/wheels/*.whl \
    || { rm -rf "$tmp"; die "the wheelhouse does not install for cp312"; }
  rm -rf "$tmp"

  local tree wheels zoo total
  # What travels: tracked and untracked-not-ignored files, and the carried $PREP (all of it, logs included).
  tree="$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)"
  wheels="$(du -sb "$PREP/wheels" | cut -f1)"
  zoo="$(du -sb "$PREP/zoo" | cut -f1)"
  total=$((tree + $(du -sb "$PREP" | cut -f1)))
  $py - "$PREP" "$tree" "$wheels" "$zoo" <<'EOF'
import json, os, subprocess, sys, time
prep, tree, wheels, zoo = sys.argv[1], *map(int, sys.argv[2:])
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
manifest = {
    "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_head": git("rev-parse", "HEAD"),
    "git_dirty_files": len([l for l in git("status", "--porcelain").splitlines() if l]),
    "wheels": sorted(os.listdir(f"{prep}/wheels")),
    "bytes": {"tree": tree, "wheels": wheels, "zoo_copy": zoo},
    "limit_bytes": 64 * 1024 * 1024,
}
open(f"{prep}/manifest.json", "w").write(json.dumps(manifest, indent=1))
print(json.dumps(manifest["bytes"]), "wheels:", " ".join(manifest["wheels"]))
EOF
  ((total < LIMIT_BYTES)) || die "$total bytes would travel: over the $LIMIT_BYTES margin (limit 64 MiB)"
  echo "== prepared: $((total / 1024 / 1024)) MiB would travel (tree + wheels + zoo copy; limit 64 MiB)"
  usage | sed -n '/coordinator/,/timeout_s/p'
}

gpu() {
  [[ -f $PREP/manifest.json ]] || die "$PREP/manifest.json missing: run \`bash bench/gpu_check.sh --prepare\` here and carry $PREP"
  local site=/tmp/gpu-check-site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$PREP"/wheels/*.whl
  export PYTHONPATH="$site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  export HF_HOME=/tmp/gpu-check-hf MPLCONFIGDIR=/tmp/gpu-check-mpl XDG_CACHE_HOME=/tmp/gpu-check-xdg PYTHONUNBUFFERED=1
  local out="${OUT:-$REPO/$PREP/out}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  timeout 420 python3 bench/gpu_check.py --device cuda --zoo-root "$PREP/zoo" --out "$out"
}

cpu() {
  [[ -x .venv/bin/python ]] || die ".venv/bin/python not found: install the project first"
  .venv/bin/python bench/gpu_check.py --device cpu --out "$PREP/out-cpu"
}

case "${1:-}" in
  --prepare) prepare ;;
  --cpu) cpu ;;
  --gpu) gpu ;;
  -h|--help|"") usage ;;
  *) usage >&2; exit 2 ;;
esac
