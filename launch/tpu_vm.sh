#!/usr/bin/env bash
# Start the same ppsn command on every worker of a Cloud TPU VM slice. JAX initializes
# jax.distributed itself on TPU VMs (PPSN_DISTRIBUTED=1 tells ppsn to call it).
#
#   launch/tpu_vm.sh --tpu NAME --zone ZONE [--project P] [--repo_dir ~/ppsn] [--setup] [--dry_run] -- ARGS...
#
# --setup first installs the checkout on every worker: pip install -e ".[tpu]". One process per
# TPU host: its data loader uses all the host's CPUs (config.data.num_workers=-1).
# Example:
#   launch/tpu_vm.sh --tpu my-v4-32 --zone us-central2-b -- \
#       --config=configs/pptsn_k400_frames.py --workdir=gs://bucket/ppTSN --config.amp=True
set -euo pipefail
tpu=""; zone=""; project=""; repo_dir="~/ppsn"; setup=0; dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --repo_dir) repo_dir="$2"; shift 2 ;;
    --setup) setup=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option $1 (ppsn arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$tpu" || -z "$zone" ]]; then echo "tpu_vm.sh: --tpu and --zone are required" >&2; exit 2; fi
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all)
if [[ -n "$project" ]]; then ssh+=(--project "$project"); fi
quoted=$(printf '%q ' "$@")
remote="cd $repo_dir && PPSN_DISTRIBUTED=1 python -m ppsn.main $quoted"
run() { if [[ $dry_run -eq 1 ]]; then echo "$*"; else "$@"; fi; }
if [[ $setup -eq 1 ]]; then run "${ssh[@]}" --command "cd $repo_dir && pip install -e '.[tpu]'"; fi
run "${ssh[@]}" --command "$remote"
