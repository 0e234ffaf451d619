#!/usr/bin/env bash
# Rebuilds the environment that make_unicode_scripts.py reads its data from.
#
#   venv/          python3.11 venv with:
#     unicodedata2==9.0.0.post4  (PyPI; Python's unicodedata for Unicode 9.0.0: which code
#                                 points are assigned in 9.0)
#     unisc==0.1                 (PyPI; ships the raw UCD file Scripts-10.0.0.txt)
#     fonttools==3.20.0          (PyPI; first release with fontTools.unicodedata.Scripts,
#                                 generated from Scripts-10.0.0.txt: used as a cross-check only)
#     numpy
#   npm/package/Script/  (optional) npm's unicode-9.0.0@0.7.5: per-script code point lists of
#                        Scripts-9.0.0.txt (cross-check only)
#
# unicodedata2 9.0.0.post4 (2017) predates Python 3.10/3.11, so its sdist needs two small
# build fixes, applied below; none touches its data tables:
#   1. `#include "ucnhash.h"`: that header left Python's public include dir in 3.10; the only
#      user (the `hashAPI` struct) is commented out in this release, so the include is dropped.
#   2. `Py_TYPE(&UCD_Type) = &PyType_Type;`: Py_TYPE is no longer an lvalue in 3.11;
#      Py_SET_TYPE is the documented replacement.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}

[ -x venv/bin/python ] || "$PY" -m venv venv
venv/bin/pip install -q numpy
venv/bin/pip install -q --no-deps unisc==0.1 fonttools==3.20.0

if ! venv/bin/python -c "import unicodedata2, sys; sys.exit(unicodedata2.unidata_version != '9.0.0')" 2>/dev/null; then
    mkdir -p dl src
    venv/bin/pip download -q --no-deps --no-binary :all: -d dl unicodedata2==9.0.0.post4
    rm -rf src/unicodedata2-9.0.0.post4
    tar xzf dl/unicodedata2-9.0.0.post4.tar.gz -C src
    c=src/unicodedata2-9.0.0.post4/unicodedata2/py3/unicodedata.c
    sed -i 's|^#include "ucnhash.h"|/* #include "ucnhash.h" (unused; removed for Python >= 3.10) */|' "$c"
    sed -i 's|^    Py_TYPE(&UCD_Type) = &PyType_Type;|    Py_SET_TYPE(\&UCD_Type, \&PyType_Type);|' "$c"
    nice venv/bin/pip install -q --no-deps src/unicodedata2-9.0.0.post4
fi
venv/bin/python -c "import unicodedata2; assert unicodedata2.unidata_version == '9.0.0'; print('unicodedata2', unicodedata2.unidata_version)"

# Optional cross-check data (npm registry).
if command -v npm >/dev/null && [ ! -d npm/package/Script ]; then
    mkdir -p npm
    (cd npm && npm pack -q unicode-9.0.0@0.7.5 >/dev/null && tar xzf unicode-9.0.0-0.7.5.tgz package/Script package/package.json)
fi
echo ok
