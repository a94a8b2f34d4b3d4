#!/bin/bash
# Slurm TaskProlog for fikit: runs as the job's user before every task of every job step, and
# each "export NAME=value" line it prints becomes part of that task's environment.  It
# preloads libfikit.so, points the task at the domain of its first GPU, and sets the fikit
# priority from the job's QOS.  See docs/slurm.md.
#
# slurm.conf:   TaskProlog=/etc/slurm/fikit-task-prolog.sh
#
# Fails open: with fikitd absent or anything unexpected, it prints nothing and the task runs
# as it would without fikit.  Checked with bash -n (and shellcheck where installed) by
# tests/test_docs_manifests.py; not run under a real slurmd.

FIKIT_RUNTIME_DIR=${FIKIT_RUNTIME_DIR:-/run/fikit}
FIKIT_LIB=${FIKIT_LIB:-/usr/lib/fikit/libfikit.so}
# "QOS priority" lines, e.g. "interactive high", "normal normal", "scavenger low".
FIKIT_QOS_MAP=${FIKIT_QOS_MAP:-/etc/fikit/slurm-qos.map}

[ -S "$FIKIT_RUNTIME_DIR/fikitd.sock" ] || exit 0
[ -r "$FIKIT_LIB" ] || exit 0
# A user may opt a job out: sbatch --export=ALL,FIKIT_DISABLE=1
[ "${FIKIT_DISABLE:-0}" = 1 ] && exit 0

# The QOS as slurmctld recorded it; the environment's copy only if scontrol cannot answer.
qos=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | tr ' ' '\n' | sed -n 's/^QOS=//p' | head -n 1)
qos=${qos:-${SLURM_JOB_QOS:-}}

prio=normal
if [ -n "$qos" ] && [ -r "$FIKIT_QOS_MAP" ]; then
    while read -r name level _; do
        case "$name" in ''|'#'*) continue ;; esac
        if [ "$name" = "$qos" ]; then
            prio=$level
            break
        fi
    done < "$FIKIT_QOS_MAP"
fi
case "$prio" in
    high|normal|low|[0-7]) ;;
    *) prio=normal ;;
esac

# The step's GPUs as global indices (gres.conf order: use AutoDetect=nvml so it is NVML's).
# Inside the step CUDA_VISIBLE_DEVICES is renumbered from 0 when devices are constrained, so
# it cannot name the domain; SLURM_STEP_GPUS / SLURM_JOB_GPUS can.
gpus=${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}
first=${gpus%%,*}
case "$first" in
    ''|*[!0-9]*) exit 0 ;;  # no GPU in this step: nothing to schedule
esac
domain="$FIKIT_RUNTIME_DIR/gpu$first"
[ -r "$domain/domain" ] || exit 0

preload="$FIKIT_LIB"
[ -n "${LD_PRELOAD:-}" ] && preload="$FIKIT_LIB:$LD_PRELOAD"
echo "export LD_PRELOAD=$preload"
echo "export FIKIT_PRIO=$prio"
echo "export FIKIT_DOMAIN=$domain"
echo "export FIKIT_SOCKET=$FIKIT_RUNTIME_DIR/fikitd.sock"
if [ -S "$FIKIT_RUNTIME_DIR/mps/control" ]; then
    echo "export CUDA_MPS_PIPE_DIRECTORY=$FIKIT_RUNTIME_DIR/mps"
    case "$prio" in low|[2-7]) echo "export CUDA_MPS_CLIENT_PRIORITY=1" ;; esac
fi
exit 0
