#!/usr/bin/env bash
# Builds the standalone environment in .venv/: the build tools, ROS 2 Kilted from PyPI wheels,
# vision_msgs generated from interfaces/vision_msgs, this package, the default model and sample
# images; with --test, the test requirements after all of that.
# Idempotent: each step is skipped while its inputs are unchanged.
#   tools/setup_standalone.sh [--test] [--jazzy]
#   --test adds the test requirements; --jazzy builds .venv-jazzy/ with ROS 2 Jazzy instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements=requirements/standalone.txt
test_requirements=requirements/test.txt
with_test=0
for argument in "$@"; do
    case "$argument" in
        --test) with_test=1 ;;
        --jazzy)
            venv="$root/.venv-jazzy"
            requirements=requirements/jazzy.txt
            test_requirements=requirements/test-jazzy.txt
            ;;
        *) printf 'setup: unknown option %s (use --test, --jazzy)\n' "$argument" >&2; exit 2 ;;
    esac
done
stamps="$venv/.stamps"

fail() {
    printf 'setup: %s\n' "$1" >&2
    exit 1
}

check_prerequisites() {
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 ||
        fail "python3 not found. Install Python 3.10 or newer (Debian/Ubuntu: apt install python3 python3-venv python3-dev)."
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        fail "$("$python" --version 2>&1) is too old: the ROS 2 wheels need Python 3.10 or newer."
    "$python" -c 'import venv, ensurepip' 2>/dev/null ||
        fail "Python's venv module is missing (Debian/Ubuntu: apt install python3-venv)."
    "$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        fail "Python headers are missing, needed to generate vision_msgs (Debian/Ubuntu: apt install python3-dev)."
    command -v cmake >/dev/null 2>&1 || fail "cmake not found (Debian/Ubuntu: apt install cmake)."
    command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
        fail "no C++ compiler found (Debian/Ubuntu: apt install g++)."
    command -v make >/dev/null 2>&1 || fail "make not found (Debian/Ubuntu: apt install make)."
}

# Runs "$@" unless the stamp named $1 holds the hash of the files listed in $2.
run_unless_current() {
    local name="$1" inputs="$2"
    shift 2
    local hash
    hash="$(cd "$root" && cat $inputs | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamps/$name" ] && [ "$(cat "$stamps/$name")" = "$hash" ]; then
        return 0
    fi
    "$@"
    mkdir -p "$stamps"
    echo "$hash" >"$stamps/$name"
}

install_requirements() {
    echo "setup: installing $1"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/$1"
}

build_vision_msgs() {
    echo "setup: generating vision_msgs into ${venv#"$root"/}"
    "$venv/bin/python" "$root/tools/fix_wheel_cmake_paths.py" "$venv"
    local build="$venv/.build/vision_msgs"
    rm -rf "$build"
    AMENT_PREFIX_PATH="$venv" cmake -S "$root/interfaces/vision_msgs" -B "$build" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
        -DPython3_EXECUTABLE="$venv/bin/python3" >"$venv/.build/vision_msgs.log" 2>&1 &&
        cmake --build "$build" -j "$(nproc)" >>"$venv/.build/vision_msgs.log" 2>&1 &&
        cmake --install "$build" >>"$venv/.build/vision_msgs.log" 2>&1 ||
        fail "building vision_msgs failed; see $venv/.build/vision_msgs.log"
}

check_prerequisites
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
mkdir -p "$venv/.build"

# The build tools first, whatever setuptools the new venv came with (ensurepip: 65.5 on
# Python 3.11, none on 3.12), so that building this package never depends on what the test
# requirements happen to bring.
run_unless_current build-requirements requirements/build.txt \
    install_requirements requirements/build.txt
run_unless_current standalone-requirements "$requirements requirements/runtime.txt" \
    install_requirements "$requirements"
run_unless_current vision-msgs "interfaces/vision_msgs/msg/*.msg interfaces/vision_msgs/CMakeLists.txt $requirements" \
    build_vision_msgs

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation --use-pep517 "$root"
"$venv/bin/python" "$root/tools/link_ros_executables.py" "$venv"
"$venv/bin/human_detector_fetch_assets" >/dev/null
# Last, so that `make test` walks the same setup path as `make demo` before adding to it.
if [ "$with_test" = 1 ]; then
    run_unless_current test-requirements "$test_requirements" \
        install_requirements "$test_requirements"
fi
echo "setup: standalone environment ready in ${venv#"$root"/}"
