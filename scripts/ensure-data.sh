#!/usr/bin/env bash
# Make sure Fashion-MNIST's IDX files are somewhere autocomp looks; install Debian's
# dataset-fashion-mnist package when they are not and apt is usable.
set -euo pipefail
for dir in "${AUTOCOMP_DATA:-}" "${AUTOCOMP_DATA:-}/fashion-mnist" /usr/share/datasets/fashion-mnist; do
  if [ -n "$dir" ] && ls "$dir"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    exit 0
  fi
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || command -v sudo >/dev/null 2>&1; }; then
  echo "Fashion-MNIST not found; installing Debian's dataset-fashion-mnist package"
  $sudo apt-get install -y dataset-fashion-mnist || { $sudo apt-get update && $sudo apt-get install -y dataset-fashion-mnist; }
else
  echo "Fashion-MNIST not found and apt-get is not usable: put the four IDX files in a folder and set AUTOCOMP_DATA to it." >&2
  exit 1
fi
