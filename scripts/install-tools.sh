#!/usr/bin/env bash
# Installs the cross toolchain and emulator Ember uses for ARM targets, when running as root and missing.
set -u
need=()
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null || {
    echo "warning: apt-get could not install ${need[*]}; ARM bundles will be object archives" >&2; exit 0; }
else
  echo "note: ${need[*]} missing; install them (sudo apt-get install -y ${need[*]}) for ARM .so bundles" >&2
fi
