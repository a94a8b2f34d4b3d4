#!/bin/bash
# Slurm Prolog for fikit: runs as root on each allocated node before the job starts and makes
# sure the node's fikitd is up, so that fikit-task-prolog.sh finds its socket.  See docs/slurm.md.
#
# slurm.conf:   Prolog=/etc/slurm/fikit-prolog.sh
#
# Always exits 0: a prolog that fails drains the node, and a node without fikit still runs
# jobs correctly (unscheduled, as before fikit).  Checked with bash -n (and shellcheck where
# installed) by tests/test_docs_manifests.py; not run under a real slurmd.

FIKIT_RUNTIME_DIR=${FIKIT_RUNTIME_DIR:-/run/fikit}

if ! systemctl is-active --quiet fikitd 2>/dev/null; then
    systemctl start fikitd 2>/dev/null || true
fi
# fikitd is ready once its socket listens (systemd's READY=1 comes at the same point).
for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -S "$FIKIT_RUNTIME_DIR/fikitd.sock" ] && exit 0
    sleep 0.5
done
logger -t fikit-prolog "job ${SLURM_JOB_ID:-?}: fikitd not ready; the job runs without fikit" 2>/dev/null || true
exit 0
