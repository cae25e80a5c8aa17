#!/bin/bash
# The test command: installs dependencies, builds the test guest, restores NuGet packages, builds, publishes the native
# isr (what users install; the end-to-end tests run it) and runs every test.
# End-to-end tests with QEMU run one at a time, each under a hard timeout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export ISR_REQUIRE_SERVICES=1 # tests of real services (Ceph, PostgreSQL) fail instead of skipping
bash scripts/install-deps.sh
bash scripts/guest/build.sh
dotnet restore Isr.slnx
dotnet build Isr.slnx --no-restore -c Release
bash scripts/publish.sh
export ISR_TEST_CLI=$ROOT/build/Isr.Cli/isr # end-to-end tests run the native isr that users install
dotnet test Isr.slnx --no-build -c Release --logger "console;verbosity=normal" "$@"
