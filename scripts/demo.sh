#!/usr/bin/env bash
# Sets up, starts the mesh on its local default (NATS found or started, four services), asks it two
# questions, prints each answer with its route, cost per hop and trace id, and stops.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec node cli/dist/main.js demo "$@"
