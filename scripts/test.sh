#!/usr/bin/env bash
# Sets up, then runs the linter, type checks, and the unit, integration and end-to-end suites
# against real nats-server processes.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec npm test
