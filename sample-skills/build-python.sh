#!/usr/bin/env bash
# Builds the Python sample skills (every sample-skills/*/ holding an app.py) into
# sample-skills/target/python/NAME.wasm with componentize-py, against the world
# `skill` in wit/.
#
#   sample-skills/build-python.sh              # every Python sample
#   sample-skills/build-python.sh py-weather   # just these (what a skill.toml's [build] runs)
#
# componentize-py comes from PyPI, pinned, into a virtual environment in the
# repository's git-ignored target/ (target/componentize-py): nothing global is
# touched. Idempotent: the venv is reused when it already has the pinned version,
# and a component is rebuilt only when its sources, the WIT, this script or the
# pinned version are newer than it.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
venv="$root/target/componentize-py"
out="$here/target/python"
componentize="$venv/bin/componentize-py"

# The venv, with exactly the pinned componentize-py (pip runs only when it is not).
installed() {
    [[ -x $componentize ]] && [[ $("$componentize" --version 2>/dev/null) == "componentize-py $COMPONENTIZE_PY_VERSION" ]]
}
if ! installed; then
    python=${PYTHON:-python3}
    command -v "$python" >/dev/null || { echo "build-python.sh: $python not found; install Python 3 (with venv)" >&2; exit 1; }
    # (Re)create it unless it has a working interpreter.
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        echo "creating $venv"
        "$python" -m venv --clear "$venv" ||
            { echo "build-python.sh: cannot create a virtual environment; install Python's venv module (Debian: python3-venv)" >&2; exit 1; }
    fi
    echo "installing componentize-py==$COMPONENTIZE_PY_VERSION into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
    installed || { echo "build-python.sh: componentize-py $COMPONENTIZE_PY_VERSION did not install into $venv" >&2; exit 1; }
fi

# Which samples: the names given, or every directory with an app.py.
names=()
if (($#)); then
    for name in "$@"; do
        [[ -f $here/$name/app.py ]] || { echo "build-python.sh: $here/$name/app.py not found" >&2; exit 2; }
        names+=("$name")
    done
else
    for app in "$here"/*/app.py; do
        [[ -f $app ]] && names+=("$(basename "$(dirname "$app")")")
    done
fi

mkdir -p "$out"
# Python path for componentize-py: the app's own modules and this venv's
# site-packages, never whatever the machine's global Python has installed.
export VIRTUAL_ENV="$venv"
unset PYTHONPATH PYTHONHOME
for name in "${names[@]}"; do
    src="$here/$name"
    wasm="$out/$name.wasm"
    # Up to date: the component exists and nothing it is built from is newer.
    if [[ -f $wasm && -f $wasm.version && $(<"$wasm.version") == "$COMPONENTIZE_PY_VERSION" ]] &&
        [[ -z $(find "$src" "$root/wit" "$here/build-python.sh" -newer "$wasm" \( -name '*.py' -o -name '*.wit' -o -name '*.sh' \) -print -quit) ]]; then
        echo "$name: up to date ($wasm)"
        continue
    fi
    # Build from a copy of the app's modules, so the source directory gets no
    # __pycache__ and nothing else in it ends up in the component.
    stage="$out/.stage/$name"
    rm -rf "$stage"
    mkdir -p "$stage"
    find "$src" -maxdepth 1 -name '*.py' -exec cp -p {} "$stage/" \;
    echo "$name: building $wasm"
    start=$SECONDS
    (cd "$stage" && "$componentize" --quiet -d "$root/wit" -w skill componentize app -p "$stage" -o "$wasm.tmp")
    mv -f "$wasm.tmp" "$wasm"
    echo "$COMPONENTIZE_PY_VERSION" >"$wasm.version"
    rm -rf "$stage"
    rmdir "$out/.stage" 2>/dev/null || true
    echo "$name: built in $((SECONDS - start))s ($(($(wc -c <"$wasm") / 1024 / 1024)) MiB)"
done
