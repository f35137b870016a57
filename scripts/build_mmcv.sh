#!/usr/bin/env bash
# Build mmcv (with compiled ops) once for this Python/torch, cache the wheel outside the repository,
# install it, and check that mmcv._ext imports. PyPI has no mmcv wheel for current torch, only an sdist
# that does not build as shipped: build isolation hides torch, setuptools>=82 lacks pkg_resources and
# torch>=2.14 headers need C++20 (the sdist asks for C++14/17).
#
#   scripts/build_mmcv.sh            # build (or reuse) and install into the active Python
#   MMCV_VERSION=2.1.0 MAX_JOBS=2 LVMBENCH_WHEELS=~/.cache/lvmbench/wheels scripts/build_mmcv.sh
set -euo pipefail
PY=${PYTHON:-python}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
TORCH_VERSION=$($PY -c 'import torch; print(torch.__version__.split("+")[0])')
PY_TAG=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE=${LVMBENCH_WHEELS:-$HOME/.cache/lvmbench/wheels}/mmcv-${MMCV_VERSION}-torch${TORCH_VERSION}-${PY_TAG}
mkdir -p "$CACHE"

if ! ls "$CACHE"/mmcv-*.whl >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PY -m pip install -q "setuptools<82" wheel ninja
  $PY -m pip download -q "mmcv==${MMCV_VERSION}" --no-deps --no-binary :all: --no-build-isolation -d "$work"
  tar xzf "$work"/mmcv-"${MMCV_VERSION}".tar.gz -C "$work"
  src="$work/mmcv-${MMCV_VERSION}"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  echo "building mmcv ${MMCV_VERSION} for torch ${TORCH_VERSION} (${PY_TAG}); this takes 15-30 minutes on 2 cores"
  (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
     $PY -m pip wheel --no-build-isolation --no-deps -w "$CACHE" .)
fi
$PY -m pip install -q --no-deps "$CACHE"/mmcv-*.whl
$PY -m pip install -q "mmengine>=0.10,<0.11" "mmdet>=3.3,<3.4"
$PY -c 'import mmcv._ext, mmdet.models; print("mmcv", __import__("mmcv").__version__, "with compiled ops: ok")'
echo "wheel cached in $CACHE"
