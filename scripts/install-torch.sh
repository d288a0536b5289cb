#!/bin/sh
# Installs torch into the environment of the Python given as $1, for `make setup`; any further
# arguments go to pip (e.g. --dry-run --report FILE). The release and PyTorch's CPU wheel index
# come from constraints.txt, the one place that names them.
#
# TORCH=cpu (the default): the CPU build. On Linux that is "VERSION+cpu" from the CPU index
#   (or any folder pip already finds wheels in); when it cannot be found (offline, an index
#   blocked by a proxy) this stops and says so, rather than fall back to PyPI's torch, which
#   on Linux is the CUDA build (several GB with its nvidia packages). On macOS and Windows
#   PyPI's torch==VERSION is itself the CPU build: it is what pip finds there.
# TORCH=pypi: PyPI's torch==VERSION, the CUDA build on Linux: for a machine with a GPU.
# TORCH_INDEX overrides the CPU index (another URL, or a mirror).
set -eu
PY=$1
shift
here=$(dirname "$0")/..
version=$(sed -n 's/^torch==//p' "$here/constraints.txt")
index=${TORCH_INDEX:-$(sed -n 's/^# torch-cpu-index: //p' "$here/constraints.txt")}
case "${TORCH:-cpu}" in
  pypi)
    echo "install-torch: PyPI's torch==$version (on Linux the CUDA build, several GB)"
    exec "$PY" -m pip install "$@" "torch==$version" ;;
  cpu) ;;
  *) echo "install-torch: TORCH must be cpu or pypi, not '$TORCH'" >&2; exit 2 ;;
esac
if [ "$(uname -s)" != Linux ]; then
  echo "install-torch: torch==$version (PyPI's build for $(uname -s) is the CPU build)"
  exec "$PY" -m pip install "$@" --extra-index-url "$index" "torch==$version"
fi
# Where pip's own sources already hold the CPU build (a wheel folder, a mirror), it needs no
# other index: asking an unreachable one costs a minute of retries per package.
if "$PY" -m pip install "$@" "torch==$version+cpu" 2>/dev/null; then
  echo "install-torch: torch==$version+cpu from pip's configured sources"
  exit 0
fi
echo "install-torch: torch==$version+cpu from $index"
if ! "$PY" -m pip install "$@" --extra-index-url "$index" "torch==$version+cpu"; then
  cat >&2 <<MSG
install-torch: torch $version's CPU build ($version+cpu) was not found at $index
  (offline, or a proxy blocks that index?). Choose one and run make setup again:
  - TORCH_INDEX=URL make setup   a mirror of that index
  - PIP_FIND_LINKS=FOLDER make setup   a folder holding the wheel
  - TORCH=pypi make setup        PyPI's torch==$version: on Linux the CUDA build, several GB
MSG
  exit 1
fi
