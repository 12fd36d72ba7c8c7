#!/usr/bin/env bash
# Benchmark campaigns of the cleanrl_ppo trainers: ./benchmark.sh --help. The work is done by benchmarks/campaign.py
# (planning, parallel runs, resumability, failure records, SLURM scripts) and benchmarks/report.py (table, plots).
# Python: $PYTHON if set, else `python` on PATH (it must have this package and its dependencies installed).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$HERE/benchmarks/campaign.py" "$@"
