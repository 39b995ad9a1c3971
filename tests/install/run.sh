#!/usr/bin/env bash
# Installs ECCL from a build tree into a scratch prefix, then builds and runs
# consumers found through find_package(eccl) and through pkg-config.
# usage: run.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > /dev/null
cmake -S "$src/tests/install/consumer" -B "$work/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/consumer" > /dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
# pkg-config, as a Makefile user would.
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror "$src/tests/install/consumer/consumer.c" -o "$work/pc" \
  $(pkg-config --cflags --libs eccl)
LD_LIBRARY_PATH="$work/prefix/lib" "$work/pc"
echo "install test: find_package (shared, static) and pkg-config consumers ok"
