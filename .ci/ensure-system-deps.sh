#!/usr/bin/env bash
# System packages the product needs: Java 11+ for TorchServe's frontend.
# Installs them with apt-get when we are root (or have sudo), else stops with a clear message.
set -euo pipefail

java_major() {
    java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit}'
}

if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 11 ]; then
    exit 0
fi
echo "TorchServe needs Java 11+; installing openjdk-17-jre-headless" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: Java 11+ is missing and we are not root: install openjdk-17-jre-headless (or any JRE 11+) and retry" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: Java 11+ is missing and apt-get is not available: install a JRE 11+ with your package manager" >&2
    exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless
