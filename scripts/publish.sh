#!/bin/bash
# Builds what a site and a server install: build/Isr.Cli/isr, one native executable compiled ahead of time (the CLI and
# the site daemon: a new process starts in milliseconds, with no JIT, where a .NET start cost a resume 0.17 s), and
# build/Isr.Server (ASP.NET Core, ReadyToRun). Needs gcc and zlib's headers for the native link (scripts/install-deps.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Quiet unless it fails; a trim or AOT warning fails too: that code could break only in the native build.
quiet() {
    local log status=0
    log=$(mktemp)
    "$@" -nologo >"$log" 2>&1 || status=$?
    if [ "$status" != 0 ] || grep -q "warning IL" "$log"; then
        grep -E "error|warning IL" "$log" | sort -u >&2 || cat "$log" >&2
        rm -f "$log"
        echo "[publish] failed: $*" >&2
        return 1
    fi
    rm -f "$log"
}
quiet dotnet publish src/Isr.Cli -c Release -r linux-x64 -p:PublishAot=true -o build/Isr.Cli
quiet dotnet publish src/Isr.Server -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true -o build/Isr.Server
