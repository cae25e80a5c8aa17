#!/bin/bash
# Builds what a site and a server install: build/Isr.Cli/isr, one native executable compiled ahead of time (the CLI and
# the site daemon: a new process starts in milliseconds, with no JIT, where a .NET start cost a resume 0.17 s), and
# build/Isr.Server (ASP.NET Core, ReadyToRun). Needs gcc and zlib's headers for the native link (scripts/install-deps.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
quiet() { "$@" -v quiet -nologo | grep -E " error |rror\(s\)|warning IL" && return 1 || return 0; }
quiet dotnet publish src/Isr.Cli -c Release -r linux-x64 -p:PublishAot=true -o build/Isr.Cli
quiet dotnet publish src/Isr.Server -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true -o build/Isr.Server
