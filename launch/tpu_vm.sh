#!/usr/bin/env bash
# Start the same ppsn command on every worker of a Cloud TPU VM slice. JAX initializes
# jax.distributed itself on TPU VMs (PPSN_DISTRIBUTED=1 tells ppsn to call it).
#
#   launch/tpu_vm.sh --tpu NAME --zone ZONE [--project P] [--repo_dir DIR]
#                    [--setup [--package SPEC]] [--dry_run] -- ARGS...
#
# --setup first puts ppsn on every worker of a fresh pod and installs it with the `tpu` extra
# (jax[tpu] and gcsfs, for gs:// workdirs and data):
#   * by default it copies this checkout (tracked and untracked files git does not ignore: no
#     .git, data/ or output/) as a tarball with `gcloud ... scp --worker=all`, unpacks it into
#     --repo_dir (default: ppsn, in the workers' home directory) and runs
#     `pip install -e "DIR[tpu]"` there;
#   * with --package SPEC it installs SPEC instead: a wheel file here (copied to every worker
#     first), or a URL / git+https://... spec (`pip install "ppsn[tpu] @ SPEC"`).
# --dry_run prints each command instead of running it, quoted so that it can be pasted.
# One process per TPU host: its data loader uses all the host's CPUs (data.num_workers=-1).
# Preemption and restarts: a preempted (spot) or maintained TPU VM gets SIGTERM; JAX's preemption
# service makes every host stop at the same step, ppsn saves a checkpoint of it and exits 143.
# Once the slice is back (recreated, or restarted by its queued resource), run the very same
# command again (without --setup if ppsn is still installed): it resumes from the workdir's latest
# checkpoint, with the same data order. Use a gs:// workdir: every host must see the same files.
# Example:
#   launch/tpu_vm.sh --tpu my-v4-32 --zone us-central2-b --setup -- \
#       --config=configs/pptsn_k400_frames.py --workdir=gs://bucket/ppTSN
set -euo pipefail
tpu=""; zone=""; project=""; repo_dir="ppsn"; package=""; setup=0; dry_run=0
die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu) tpu="${2:-}"; shift 2 ;;
    --zone) zone="${2:-}"; shift 2 ;;
    --project) project="${2:-}"; shift 2 ;;
    --repo_dir) repo_dir="${2:-}"; shift 2 ;;
    --package) package="${2:-}"; shift 2 ;;
    --setup) setup=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) die "unknown option $1 (ppsn arguments go after --)" ;;
  esac
done
[[ -n "$tpu" && -n "$zone" ]] || die "--tpu and --zone are required"
[[ -z "$package" || $setup -eq 1 ]] || die "--package goes with --setup"

# One command: run it, or print it quoted for pasting.
run() {
  if [[ $dry_run -eq 1 ]]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}
where=(--zone "$zone")
if [[ -n "$project" ]]; then where+=(--project "$project"); fi
on_workers() {  # a command line (one string, for the remote shell) on every worker
  run gcloud compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all --command "$1"
}
to_workers() {  # a local file to the same path on every worker
  run gcloud compute tpus tpu-vm scp "$1" "$tpu:$2" "${where[@]}" --worker=all
}
q() { printf '%q' "$1"; }

cd_repo="cd $(q "$repo_dir") && "
if [[ $setup -eq 1 && -n "$package" ]]; then
  cd_repo=""  # installed as a package: ppsn runs from any directory
  if [[ "$package" == *.whl && "$package" != *://* ]]; then
    [[ -f "$package" ]] || die "--package $package: no such wheel file"
    remote="/tmp/$(basename "$package")"
    to_workers "$package" "$remote"
    on_workers "python -m pip install $(q "$remote[tpu]")"
  else
    on_workers "python -m pip install $(q "ppsn[tpu] @ $package")"
  fi
elif [[ $setup -eq 1 ]]; then
  checkout="$(cd "$(dirname "$0")/.." && pwd)"
  git -C "$checkout" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    die "--setup copies the checkout $checkout, which is not a git checkout (or use --package)"
  tarball="${TMPDIR:-/tmp}/ppsn-src.tar.gz"
  # tracked files and untracked ones git does not ignore: no .git, data/, output/, venvs
  run bash -c 'cd "$1" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -czf "$2"' tar-checkout "$checkout" "$tarball"
  to_workers "$tarball" /tmp/ppsn-src.tar.gz
  dir=$(q "$repo_dir")
  local_path="$repo_dir"  # pip needs a path, not a name: ./ppsn[tpu]
  if [[ "$local_path" != /* && "$local_path" != .* ]]; then local_path="./$local_path"; fi
  on_workers "rm -rf $dir && mkdir -p $dir && tar -xzf /tmp/ppsn-src.tar.gz -C $dir && python -m pip install -e $(q "$local_path[tpu]")"
fi
args=""
if [[ $# -gt 0 ]]; then printf -v args ' %q' "$@"; fi
on_workers "${cd_repo}PPSN_DISTRIBUTED=1 python -m ppsn.main${args}"
