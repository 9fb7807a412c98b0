#!/usr/bin/env bash
# Run ppsn on this host: one process over all local devices, or N local processes joined with
# jax.distributed (a multi-host dry run on one machine; on CPU each process gets K devices).
#
#   launch/local.sh [--dry_run] [--processes N] [--devices_per_process K] -- ARGS...
#
# With N processes each gets PPSN_CPUS = (this host's CPUs) / N: its data loader derives its
# worker count from that (config.data.num_workers=-1). ARGS go to `python -m ppsn.main`, e.g.
#   launch/local.sh -- --config=configs/pptsn_toy.py --workdir=output/toy
#   launch/local.sh --processes 2 --devices_per_process 2 -- --config=configs/pptsn_toy.py --workdir=output/toy2
set -euo pipefail
dry_run=0; processes=1; devices=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) dry_run=1; shift ;;
    --processes) processes="$2"; shift 2 ;;
    --devices_per_process) devices="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1 (ppsn arguments go after --)" >&2; exit 2 ;;
  esac
done
python=${PYTHON:-python}
if [[ "$processes" -le 1 ]]; then
  cmd=("$python" -m ppsn.main "$@")
  if [[ $dry_run -eq 1 ]]; then echo "${cmd[*]}"; exit 0; fi
  exec "${cmd[@]}"
fi
port=${PPSN_COORDINATOR_PORT:-$("$python" -c 'import portpicker; print(portpicker.pick_unused_port())')}
cpus=$("$python" -c "import os; print(max(1, len(os.sched_getaffinity(0)) // $processes))")
pids=()
for ((i = 0; i < processes; i++)); do
  env_vars=(JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$processes JAX_PROCESS_ID=$i
            PPSN_CPUS=$cpus)
  if [[ -n "$devices" ]]; then env_vars+=(XLA_FLAGS=--xla_force_host_platform_device_count=$devices); fi
  if [[ $dry_run -eq 1 ]]; then
    echo "${env_vars[*]} $python -m ppsn.main $*"
  else
    env "${env_vars[@]}" "$python" -m ppsn.main "$@" &
    pids+=($!)
  fi
done
[[ $dry_run -eq 1 ]] && exit 0
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
