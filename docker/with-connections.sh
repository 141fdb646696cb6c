#!/usr/bin/env bash
# Give an Airflow process the demo schools' connections (pointing at the simulator
# service), then run it. In a real deployment, define the schools' connections in a
# secrets backend instead and drop this wrapper.
set -euo pipefail
eval "$(b2b-simulator connections --format env --base-url "${SIMULATOR_URL:-http://simulator:8765}")"
exec "$@"
