#!/usr/bin/env python3
"""Generate unicode_scripts.py: the Unicode 9.0.0 Script property (UAX #24) of every code point.

SentencePiece 0.2.3's BPE trainer will not merge characters of different scripts, and its script
table is Unicode 9.0's Scripts.txt, with every code point not listed there (unassigned,
surrogates, private use: the Unknown script) treated as "Common". This script rebuilds that
table from public Unicode data packages only:

  * Scripts-10.0.0.txt, the raw UCD file, as shipped in the PyPI package unisc==0.1
    (unisc/data/Scripts.txt). It gives the Script value of each code point in 10.0 and the order
    of the file's sections, which is the order in which script ids are numbered.
  * unicodedata2==9.0.0.post4 (PyPI): Python's unicodedata for Unicode 9.0.0. A code point is
    assigned in 9.0 iff its General_Category is not Cn.

  script9(cp) = Script value in Scripts-10.0.0.txt if cp is assigned in 9.0, else Common,
                with SCRIPT_CHANGES_9_TO_10 (below) undone; Unknown -> Common.

Unicode's stability policy does not freeze the Script property, so a code point assigned in 9.0
may have another value in 10.0; every such change is listed in SCRIPT_CHANGES_9_TO_10 and undone.
Optional cross-checks, run when available (any disagreement aborts):
  * fonttools==3.20.0 (PyPI): fontTools.unicodedata.Scripts, generated from the same
    Scripts-10.0.0.txt; checks the parse of the raw file.
  * unicode-9.0.0@0.7.5 (npm, MIT): per-script code point lists generated from
    Scripts-9.0.0.txt itself (package/Script/<Name>/code-points.js); checks the whole result,
    including that SCRIPT_CHANGES_9_TO_10 is complete and right. Pass its folder with --npm.

Usage (inside the venv built by setup_venv.sh):
    python make_unicode_scripts.py [-o unicode_scripts.py] [--npm npm/package]
"""

import argparse
import gzip
import importlib.util
import json
import os
import re
import sys
import textwrap

N_CODE_POINTS = 0x110000

# Script property changes between Unicode 9.0.0 and 10.0.0 on code points already assigned in
# 9.0.0, as {code point: (value in Scripts-10.0.0.txt, value in Scripts-9.0.0.txt)}.
SCRIPT_CHANGES_9_TO_10 = {
    # U+061C ARABIC LETTER MARK (added in 6.3 with sc=Arabic) was sc=Common from Unicode 7.0
    # through 9.0 (UTC 138-C9, after L2/13-240). Unicode 10.0.0 restored sc=Arabic (and
    # scx=Arab Syrc Thaa), as proposed in L2/16-306 (P. Constable, "Script property of Arabic
    # Letter Mark and interaction with digit substitution mechanisms", 2016-10-27).
    0x061C: ("Arabic", "Common"),
}

# Where bpe_kernel's encoding folds scripts together (applied by the generated script_array()).
KERNEL_FOLD = {"Hiragana": "Han", "Katakana": "Han"}
KERNEL_HAN_EXTRA = (0x30FC,)  # KATAKANA-HIRAGANA PROLONGED SOUND MARK (sc=Common) counts as Han


def package_file(package, *parts):
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {package!r} is not installed (run setup_venv.sh)")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def read_scripts_txt(path):
    """(version line, [(first, last, value)] in file order) of a UCD Scripts-X.txt."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    version = text.splitlines()[0].lstrip("# ").strip()
    entries = []
    for line in text.splitlines():
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        rng, value = (x.strip() for x in data.split(";"))
        first, _, last = rng.partition("..")
        entries.append((int(first, 16), int(last or first, 16), value))
    return version, entries


def assigned_in_9_0():
    """bytearray: 1 where unicodedata2 (Unicode 9.0.0) gives a General_Category other than Cn."""
    import unicodedata2

    if unicodedata2.unidata_version != "9.0.0":
        sys.exit(f"unicodedata2 is Unicode {unicodedata2.unidata_version}, not 9.0.0")
    cat = unicodedata2.category
    return bytearray(cat(chr(cp)) != "Cn" for cp in range(N_CODE_POINTS)), unicodedata2


def build(scripts_txt):
    """Per-code-point Script values for Unicode 9.0.0 and the value names in section order."""
    version, entries = read_scripts_txt(scripts_txt)
    if version != "Scripts-10.0.0.txt":
        sys.exit(
            f"expected Scripts-10.0.0.txt, got {version!r}: "
            "SCRIPT_CHANGES_9_TO_10 lists the changes from 9.0 to 10.0 only"
        )
    assigned, ud = assigned_in_9_0()

    value = ["Common"] * N_CODE_POINTS  # unlisted (Unknown) and unassigned in 9.0: Common
    section_order = ["Common"]
    new_in_10 = 0
    for first, last, name in entries:
        if name == "Unknown":
            name = "Common"
        if name not in section_order:
            section_order.append(name)
        for cp in range(first, last + 1):
            if assigned[cp]:
                value[cp] = name
            else:
                new_in_10 += 1  # assigned in 10.0 only: stays Common

    for cp, (v10, v9) in SCRIPT_CHANGES_9_TO_10.items():
        assert assigned[cp] and value[cp] == v10, (hex(cp), value[cp], v10)
        value[cp] = v9

    # Scripts whose characters are all new in 10.0 (Masaram_Gondi, Nushu, Soyombo,
    # Zanabazar_Square) drop out; the others keep the order of their sections.
    present = set(value)
    names = [n for n in section_order if n in present]
    stats = {
        "scripts_txt": version,
        "unicodedata2": ud.unidata_version,
        "listed_in_10": sum(last - first + 1 for first, last, _ in entries),
        "new_in_10": new_in_10,
        "assigned_9_listed": sum(last - first + 1 for first, last, _ in entries) - new_in_10,
    }
    return value, names, stats


def cross_check_fonttools(scripts_txt):
    """Our parse of Scripts-10.0.0.txt == fontTools 3.20.0's table (same source file)."""
    try:
        from fontTools.unicodedata import Scripts as ft
    except ImportError:
        return None, "fontTools.unicodedata not installed: skipped"
    import bisect

    _, entries = read_scripts_txt(scripts_txt)
    raw = {}
    for first, last, name in entries:
        for cp in range(first, last + 1):
            raw[cp] = name
    starts, values = ft.RANGES, ft.VALUES
    for cp in range(N_CODE_POINTS):
        v = values[bisect.bisect_right(starts, cp) - 1]
        if (v if v != "Zzzz" else "Unknown") != raw.get(cp, "Unknown"):
            sys.exit(f"fontTools disagrees at U+{cp:04X}: {v} vs {raw.get(cp)}")
    label = f"fontTools {__import__('fontTools').version} (fontTools.unicodedata.Scripts)"
    return label, f"{label}: equal on all code points"


def read_npm_unicode_9(folder):
    """{code point: Script} from npm unicode-9.0.0's Script/<Name>/code-points.js files."""
    base = os.path.join(folder, "Script")
    table = {}
    for name in sorted(os.listdir(base)):
        with open(os.path.join(base, name, "code-points.js"), encoding="utf-8") as f:
            js = f.read()
        packed = re.search(r"Buffer\.from\(\[([0-9,]+)\]\)", js)  # gzipped JSON for big lists
        if packed:
            cps = json.loads(gzip.decompress(bytes(int(b) for b in packed.group(1).split(","))))
        else:
            plain = re.fullmatch(r"\s*module\.exports\s*=\s*(\[[0-9,\s]*\]);?\s*", js)
            cps = json.loads(plain.group(1))
        for cp in cps:
            assert cp not in table, hex(cp)
            table[cp] = name
    return table


def cross_check_npm(folder, value):
    if not folder:
        return None, "npm unicode-9.0.0: not given (--npm): skipped"
    table = read_npm_unicode_9(folder)
    bad = [cp for cp in range(N_CODE_POINTS) if value[cp] != table.get(cp, "Common")]
    if bad:
        sys.exit(
            "npm unicode-9.0.0 disagrees at "
            + ", ".join(f"U+{cp:04X} ({value[cp]} vs {table.get(cp, 'Common')})" for cp in bad[:20])
        )
    with open(os.path.join(folder, "package.json"), encoding="utf-8") as f:
        ver = json.load(f)["version"]
    label = f"npm unicode-9.0.0@{ver} (Script lists of Scripts-9.0.0.txt)"
    return label, f"{label}: equal on all code points ({len(table)} listed)"


def ranges_of(value, names):
    index = {n: i for i, n in enumerate(names)}
    starts, ids = [], []
    for cp, v in enumerate(value):
        if not ids or index[v] != ids[-1]:
            starts.append(cp)
            ids.append(index[v])
    return starts, ids


def wrap(items, indent="    ", width=99):
    lines, line = [], indent
    for it in items:
        piece = it + ","
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines)


MODULE_TEMPLATE = '''\
# GENERATED FILE, do not edit: made by scripts/unicode_scripts/make_unicode_scripts.py.
"""Unicode 9.0.0 Script property (UAX #24) of every code point, as SentencePiece 0.2.3's trainer
sees it: code points without a Script value in Unicode 9.0 (unassigned, surrogates, private use;
sc=Unknown) are "Common".

{generated_from}

Unicode data: Copyright (c) 1991-2017 Unicode, Inc. Distributed under the Unicode License (Unicode,
Inc. License Agreement - Data Files and Software), https://www.unicode.org/license.txt

{n_ranges} ranges: code points _STARTS[i] .. _STARTS[i + 1] - 1 have Script NAMES[_SCRIPTS[i]].
"""
import bisect as _bisect

UNICODE_VERSION = "9.0.0"

# Script values, in the order of the sections of Scripts-9.0.0.txt (Common first).
NAMES = (
{names}
)

_STARTS = (
{starts}
)

_SCRIPTS = (
{ids}
)


def script_of(cp):
    """Script value name of code point cp (an int or a one-character str)."""
    if isinstance(cp, str):
        cp = ord(cp)
    if not 0 <= cp < 0x110000:
        raise ValueError(f"not a code point: {{cp!r}}")
    return NAMES[_SCRIPTS[_bisect.bisect_right(_STARTS, cp) - 1]]


# The int encoding that bpe_kernel.train_merges takes (what bpe_kernel.script_array makes from a
# {{code point: name}} dict in Scripts.txt order, missing code points "Common"): Inherited -> -1;
# the other scripts numbered 0, 1, ... in NAMES order, Hiragana and Katakana folded into Han
# (which takes the number of the first of the three); U+30FC is given Han's number too.
_FOLD = {fold!r}
_KERNEL_HAN_EXTRA = {han_extra!r}


def _kernel_numbers():
    ids, per_name = {{}}, []
    for name in NAMES:
        name = _FOLD.get(name, name)
        per_name.append(-1 if name == "Inherited" else ids.setdefault(name, len(ids)))
    return tuple(per_name), tuple(ids)


_KERNEL_ID, KERNEL_NAMES = _kernel_numbers()  # KERNEL_NAMES[i]: the script named by id i >= 0


def script_array():
    """A fresh int16 numpy array of length 0x110000: bpe_kernel's script id of each code point."""
    import numpy as np

    starts = np.array(_STARTS + (0x110000,), np.int64)
    ids = np.array(_KERNEL_ID, np.int16)[np.array(_SCRIPTS, np.intp)]
    arr = np.repeat(ids, np.diff(starts))
    arr[list(_KERNEL_HAN_EXTRA)] = KERNEL_NAMES.index("Han")
    return arr
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument(
        "-o", "--output", default=os.path.join(here, "..", "..", "pipeline", "tokenizer", "unicode_scripts.py")
    )
    ap.add_argument(
        "--scripts-txt", default=None, help="Scripts-10.0.0.txt (default: the copy in the installed unisc package)"
    )
    ap.add_argument(
        "--npm", default=None, help="folder of npm unicode-9.0.0@0.7.5 (holding Script/), for a cross-check"
    )
    args = ap.parse_args()

    scripts_txt = args.scripts_txt or package_file("unisc", "data", "Scripts.txt")
    value, names, stats = build(scripts_txt)
    checks = [cross_check_fonttools(scripts_txt), cross_check_npm(args.npm, value)]
    starts, ids = ranges_of(value, names)
    assert names[0] == "Common" and starts[0] == 0

    done = [label for label, _ in checks if label]
    generated_from = textwrap.fill(
        "Generated from Unicode 9.0 data by make_unicode_scripts.py: the Script property of "
        f"{stats['scripts_txt'].replace('.txt', '')} (via the PyPI package unisc 0.1) on the code "
        f"points assigned in Unicode {stats['unicodedata2']} (via the PyPI package unicodedata2 "
        "9.0.0.post4), with the Unicode 10.0 Script change on a 9.0 character undone ("
        + "; ".join(f"U+{cp:04X}: {v10} in 10.0, {v9} in 9.0" for cp, (v10, v9) in SCRIPT_CHANGES_9_TO_10.items())
        + "); checked against "
        + (" and ".join(done) or "nothing")
        + ".",
        width=99,
    )
    text = MODULE_TEMPLATE.format(
        generated_from=generated_from,
        n_ranges=len(starts),
        names=wrap([repr(n) for n in names]),
        starts=wrap([f"0x{s:04X}" for s in starts]),
        ids=wrap([str(i) for i in ids]),
        fold=KERNEL_FOLD,
        han_extra=KERNEL_HAN_EXTRA,
    )
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)

    for _, message in checks:
        print(message)
    print(
        f"{stats['scripts_txt']}: {stats['listed_in_10']} code points listed; "
        f"{stats['assigned_9_listed']} assigned in Unicode {stats['unicodedata2']}, "
        f"{stats['new_in_10']} new in 10.0 (set to Common)"
    )
    print(f"{len(names)} scripts, {len(starts)} ranges -> {args.output} ({os.path.getsize(args.output)} bytes)")


if __name__ == "__main__":
    main()
