"""Distributed-style training skeleton for a Slurm run: every rank reads its
place in the job from the environment the provider sets, checkpoints into the
shared outputs directory (which survives a requeue), and rank 0 logs metrics.
Uses only the standard library, so it runs with any Python on the nodes."""
import json
import os
import signal
import time

import aml_run

rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
attempt = int(os.environ.get("AML_ATTEMPT", "1"))
outputs = os.environ.get("AML_OUTPUTS_DIR", "outputs")
ckpt = os.path.join(outputs, "checkpoint-rank%d.json" % rank)

stop = False


def near_time_limit(signum, frame):  # sbatch --signal=USR1@60: checkpoint, then stop
    global stop
    stop = True


signal.signal(signal.SIGUSR1, near_time_limit)

state = {"epoch": 0, "loss": 1.0}
if os.path.exists(ckpt):  # a requeued attempt resumes
    with open(ckpt) as f:
        state = json.load(f)

for epoch in range(state["epoch"], 5):
    time.sleep(0.2)
    state = {"epoch": epoch + 1, "loss": state["loss"] * 0.6}
    with open(ckpt, "w") as f:
        json.dump(state, f)
    if rank == 0:
        aml_run.log("loss", state["loss"], step=epoch + 1)
    if stop:
        break

if rank == 0:
    aml_run.log("world_size", world)
    aml_run.log("attempt", attempt)
print("rank %d/%d on %s (master %s:%s) done after epoch %d" % (rank, world, os.uname().nodename,
      os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"), state["epoch"]), flush=True)
