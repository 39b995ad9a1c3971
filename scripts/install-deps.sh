#!/usr/bin/env bash
# Installs what building and testing ECCL needs, from Debian's packages.
# Idempotent: asks apt only for packages that are missing.
set -euo pipefail

packages=(
  cmake ninja-build g++ clang libclang-rt-dev pkg-config libasan8 libtsan2 libubsan1
  libasio-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libssl-dev openssl libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libibverbs-dev  # the RDMA transport builds against rdma-core's verbs.h (no device needed)
  python3  # examples.diloco checks the example's output with a script
  # The Python package (bindings/python) and its tests: Debian's torch 1.13 (CPU) is enough.
  python3-dev pybind11-dev python3-numpy python3-pytest python3-torch
  iptables iproute2  # the link-cut fault test and the lab test (ip, tc; they skip without root)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
