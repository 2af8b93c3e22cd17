#!/usr/bin/env bash
# The paper's larger CIFAR-10 models on one GPU (issue 15, item 4): train allcnn, nin and resnet18 with
# relu, sapl, apl and swish, then run Tables 2-4 plus Sparse-RS and PGD on them (configs/gpu-paper.yaml).
#
#   bash bench/gpu_paper.sh [--toy] [--config CONFIG] [OUTDIR]
#
# CONFIG is configs/gpu-paper.yaml unless given; configs/gpu-paper-at.yaml is the same models under
# adversarial training with the activations of issue 26 (FGSM-RS 8/255, autoattack at 8/255 and 12/255).
#
# On the GPU machine: `robench suite configs/gpu-paper.yaml --device cuda --workers 4` (four cells share
# the GPU), stopped with Ctrl-C (SIGINT) after $GPU_PAPER_LIMIT_S seconds (default 480) so that the
# results come back inside one device call; finished repeats are kept, and the same command resumes.
# Then the report and the seed-free stats, and OUTDIR ($OUT, else build/gpu-paper) receives:
#   gpu-paper-results.tar.part-*   results, sidecars (with each .pt's sha256), checkpoints under 5 MiB
#   report.md, log.txt
# Unpack here with `cat gpu-paper-results.tar.part-* | tar -x`; checkpoints over 5 MiB (resnet18, about
# 45 MB) stay behind: `robench verify` then says in one line that the checkpoint is absent, and the
# same suite command retrains them (the sidecar records the schedule, seed and sha256).
#
# Data: $ROBENCH_DATA, else this project's sandbox archive carried as .gpudata/ (cifar10-jpeg.npz and
# prepare.py, copied from ../shared/data; `echo /.gpudata/ >> .git/info/exclude` first), unpacked to a
# temp folder. On this project's GPU machine robench's own dependencies are there but foolbox is not:
# carry its wheels and `pip install --no-deps -e .` first (the device tool's README says how).
# From a slim export: the device tool sends at most 64 MiB of working tree, and this suite trains its
# own checkpoints and writes its own results, so it needs none of checkpoints/ or attacks/ (no
# shipped seed-0 checkpoint is an input: the suite names resnet18, allcnn and nin only). About 1 MB:
#   mkdir /tmp/slim && git archive HEAD -- robench configs bench pyproject.toml README.md | tar -x -C /tmp/slim
#   then carry .gpudata/ as below (or set ROBENCH_DATA) and run `bash bench/gpu_paper.sh` in /tmp/slim.
# A variant that also attacks shipped models adds their files to the pathspec, e.g.
# `checkpoints/lenet5-relu-cifar10-s0.pt checkpoints/lenet5-relu-cifar10-s0.json` (and the
# .history.json.gz it names); docs/stored-results.md lists the commands.
#
# --toy checks the whole script on a CPU in a minute or two, in a temp folder: the same attack list at
# each attack's quick budget on LeNet-5 (the first two activations) trained with the same schedule
# (adversarial or not) for one epoch on 2048 images (bench/gpu_paper_files.py).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

toy=0
config_file=configs/gpu-paper.yaml
while [[ $# -gt 0 ]]; do
    case "$1" in
        --toy) toy=1; shift ;;
        --config) config_file="${2:?--config needs a file}"; shift 2 ;;
        *) break ;;
    esac
done
if [[ ! -f "$config_file" ]]; then echo "gpu_paper: no config $config_file" >&2; exit 2; fi
config_file="$(cd "$(dirname "$config_file")" && pwd)/$(basename "$config_file")"
out="${1:-${OUT:-build/gpu-paper}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
limit="${GPU_PAPER_LIMIT_S:-480}"
py="${PYTHON:-python3}"
if [[ $py == */* ]]; then py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"; fi  # the script changes folder
robench=("$py" -m robench.cli)
exec > >(tee "$out/log.txt") 2>&1

if [[ -z "${ROBENCH_DATA:-}" ]]; then
    if [[ -f .gpudata/cifar10-jpeg.npz ]]; then
        ROBENCH_DATA="$(mktemp -d)/data"
        export ROBENCH_DATA
        "$py" .gpudata/prepare.py "$ROBENCH_DATA"
    else
        echo "gpu_paper: no data: set ROBENCH_DATA or carry .gpudata/ (cifar10-jpeg.npz, prepare.py)" >&2
        exit 2
    fi
fi

work="$repo"
configs=("$config_file")
device=auto
workers=4
if [[ $toy == 1 ]]; then
    work="$(mktemp -d)"
    "$py" bench/gpu_paper_files.py toy "$config_file" "$work"
    configs=("$work/toy.yaml")
    device=cpu
    workers=2
fi
cd "$work"  # the configs' folders are relative to it

start=$SECONDS
for config in "${configs[@]}"; do
    left=$(( limit - (SECONDS - start) ))
    if (( left <= 0 )); then echo "gpu_paper: out of time before $config"; break; fi
    # exit 1 lists failed cells, 124 is the time limit: the rest of the script still packs what exists
    timeout --signal=INT --kill-after=60 "$left" "${robench[@]}" suite "$config" --device "$device" \
        --workers "$workers" --quiet || echo "gpu_paper: $config ended with exit $? after $(( SECONDS - start )) s"
done

# What comes back: every result, every sidecar, the checkpoints small enough to commit (<= 5 MiB).
list="$(mktemp)"
for config in "${configs[@]}"; do
    "$py" "$repo/bench/gpu_paper_files.py" outputs "$config"
done | sort -u > "$list"
results="$("$py" "$repo/bench/gpu_paper_files.py" results "${configs[-1]}")"
"${robench[@]}" report --results "$results" --format markdown --out "$out/report.md" || true
tar -cf - -T "$list" | split -b 15m - "$out/gpu-paper-results.tar.part-"
echo "gpu_paper: $(wc -l < "$list") files packed into $out in $(( SECONDS - start )) s"
