"""Training jobs over two Slurm nodes (issue 15): a real two-node cluster on this machine
(`SLURM_LOCAL_NODES=2 bash slurm/local/start.sh`: slurmd node1 and node2, each in its own
network namespace with its own address on a private bridge), so the two ranks of a job run
in two network stacks and gloo's traffic between them crosses the bridge, as between hosts.

Without such a cluster these tests skip, unless RECURSIVE_REQUIRE_SLURM=1 (set by .ci/run),
where a missing one fails them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from recursive.attempt import Attempt
from recursive.config import compose_config, compose_typed
from recursive.data.prepare import prepare_data
from recursive.io import atomic_write_json, atomic_write_text
from recursive.launch.slurm import SlurmLauncher, job_state
from recursive.run_config import seed_plan

from .test_slurm_launcher import cli, job_events, jobs, resumed_steps, slurm_job, trained_steps, wait_for

pytestmark = pytest.mark.slow
TWO_NODES = ["launcher=slurm", "launcher.nodes=2", "train.num_processes=2", "launcher.poll_s=0.5"]
# the smoke lineage at its smallest that still proposes, trains, evaluates and gates each generation
CHEAP = ["logger=none", "evaluate.eval_windows_per_domain=8", "evaluate.proposer_samples=1",
         "evaluate.arithmetic_problems=10", "evaluate.refusal_items=10", "evaluate.collapse_samples=2",
         "proposer.candidates=2", "proposer.control_candidates=false"]


def usable_nodes() -> list[str]:
    p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True)
    if p.returncode != 0:
        return []
    return sorted({n for n, state in (ln.split() for ln in p.stdout.splitlines() if len(ln.split()) == 2)
                   if not re.match(r"(down|drain|fail|unknown|not_responding|inval)", state.rstrip("*~#"))})


@pytest.fixture(scope="module")
def two_nodes():
    nodes = usable_nodes() if subprocess.run(["which", "sinfo"], capture_output=True).returncode == 0 else []
    if len(nodes) < 2:
        why = f"needs a Slurm cluster of two nodes, found {nodes or 'none'}: SLURM_LOCAL_NODES=2 bash slurm/local/start.sh"
        if os.environ.get("RECURSIVE_REQUIRE_SLURM") == "1":
            pytest.fail("RECURSIVE_REQUIRE_SLURM=1 but this test " + why)
        pytest.skip(why)
    mine: list[Path] = []
    yield mine
    # leave no job of these tests behind (only the ones their attempt directories recorded)
    left = [j["job_id"] for d in mine for f in d.rglob("slurm_jobs.json") for j in json.loads(f.read_text())
            if (job_state(j["job_id"]) or {}).get("state") in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")]
    if left:
        subprocess.run(["scancel", *left], capture_output=True)


def node_addr(node: str) -> str:
    """The address Slurm reaches `node` at (its NodeAddr)."""
    out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True).stdout
    return re.search(r"\bNodeAddr=(\S+)", out).group(1)


def hostnames(nodelist: str) -> list[str]:
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout.split()


def assert_ran_on_two_nodes(d: Path, job_id: str) -> dict:
    """What a user checks of a two-node training job: Slurm ran it on two nodes, it
    completed, and each rank reports a different node at that node's own address."""
    seen = slurm_job(job_id)
    assert seen["JobState"] == "COMPLETED" and seen["NumNodes"] == "2" and seen["NumTasks"] == "2", seen
    m = json.loads((d / "train_metrics.json").read_text())
    assert m["world_size"] == 2
    ranks = m["nodes"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert len({r["node"] for r in ranks}) == 2 and len({r["addr"] for r in ranks}) == 2, ranks
    assert [r["node"] for r in ranks] == hostnames(seen["NodeList"])  # rank 0 on the first node (the master)
    for r in ranks:  # the address each rank reached the master from is its node's own, not loopback
        assert r["addr"] == node_addr(r["node"]) and not r["addr"].startswith("127."), ranks
    return m


# ------------------------------------------------------------------ no cluster needed
def test_over_several_nodes_gloo_is_bound_to_the_interface_toward_the_master():
    from recursive.train.distributed import env_from_slurm
    base = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "MASTER_ADDR": "127.0.0.1"}
    assert env_from_slurm(dict(base, SLURM_JOB_NUM_NODES="2"))["GLOO_SOCKET_IFNAME"] == "lo"
    assert "GLOO_SOCKET_IFNAME" not in env_from_slurm(dict(base, SLURM_JOB_NUM_NODES="1"))  # one node: gloo's own pick
    mine = dict(base, SLURM_JOB_NUM_NODES="2", GLOO_SOCKET_IFNAME="ib0")
    env_from_slurm(mine)
    assert mine["GLOO_SOCKET_IFNAME"] == "ib0"  # the user's (launcher.env) wins


# ------------------------------------------------------------------ (a) the smoke lineage
def test_smoke_lineage_trains_every_generation_as_one_job_over_two_nodes(two_nodes, tmp_path):
    run_dir = tmp_path / "smoke2n"
    two_nodes.append(run_dir)
    p = cli("run", "experiment=smoke", "train=ddp", *TWO_NODES, *CHEAP, f"run_dir={run_dir}", timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["status"] == "complete"
    trained = [d for d in sorted((run_dir / "generations").glob("gen_*/attempt_*")) if (d / "train.sbatch").exists()]
    assert len({d.parent.name for d in trained}) == 3  # generation 0 and two successors
    recorded = {e[1] for e in job_events(run_dir)}
    for d in trained:
        assert "#SBATCH --nodes=2" in (d / "train.sbatch").read_text().splitlines()
        assert "#SBATCH --ntasks-per-node=1" in (d / "train.sbatch").read_text().splitlines()
        for job in jobs(d):
            assert job["state"] == "COMPLETED" and job["job_id"] in recorded
        assert_ran_on_two_nodes(d, jobs(d)[-1]["job_id"])


# ------------------------------------------------------------------ one attempt, trained by the real launcher
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = compose_config(["experiment=smoke", "data.max_chars_per_source=100000"])
    run_dir = tmp_path_factory.mktemp("two_node_data")
    return run_dir, prepare_data(cfg["data"], run_dir), seed_plan(cfg)


def attempt(run_dir: Path, prepared, steps: int, **spec) -> Attempt:
    """generation 0's attempt directory as the loop writes it before training: the smoke seed
    plan cut to `steps`, its train_spec over the prepared shards."""
    data_dir, manifest, plan = prepared
    at = Attempt(run_dir, 0, 1)
    plan = plan.model_copy(update={"hparams": plan.hparams.model_copy(update={"steps": steps, "warmup_steps": 5})})
    atomic_write_text(at.dir / "plan.json", plan.to_json())
    shards = {n: str(data_dir / e["path"]) for n, e in manifest["train"].items()}
    atomic_write_json(at.dir / "train_spec.json", {
        "tokenizer": str(data_dir / manifest["tokenizer"]), "shards": shards,
        "mixture": {n: 1 / len(shards) for n in shards}, "threads": 1, "log_every": 1, "num_processes": 2, **spec})
    return at


def launcher(at: Attempt, train: str, log: list[str]) -> SlurmLauncher:
    """The real launcher=slurm of a lineage in at.run_dir (composed here: hydra's compose is
    not thread-safe, the launcher's run is)."""
    cfg = compose_typed(["experiment=smoke", f"train={train}", *TWO_NODES, f"run_dir={at.run_dir}"])[0]
    return SlurmLauncher(cfg, log.append)


def train_on_slurm(at: Attempt, train: str, log: list[str]) -> int:
    return launcher(at, train, log).run(at, "train")


def weights(d: Path) -> dict:
    return AutoModelForCausalLM.from_pretrained(d / "model").state_dict()


# ------------------------------------------------------------------ (b) preemption of a two-node job
def test_usr1_on_a_two_node_job_checkpoints_both_ranks_requeues_and_ends_like_the_uninterrupted_run(
        two_nodes, prepared, tmp_path):
    steps = 200
    whole = attempt(tmp_path / "whole", prepared, steps, strategy="ddp")
    cut = attempt(tmp_path / "cut", prepared, steps, strategy="ddp")
    two_nodes += [whole.run_dir, cut.run_dir]
    logs: dict[str, list[str]] = {"whole": [], "cut": []}
    rcs: dict[str, int] = {}
    # both jobs at once: each takes one CPU of each node
    runs = {k: (launcher(at, "ddp", logs[k]), at) for k, at in (("whole", whole), ("cut", cut))}
    threads = [threading.Thread(target=lambda k=k, la=la, at=at: rcs.__setitem__(k, la.run(at, "train")))
               for k, (la, at) in runs.items()]
    for t in threads:
        t.start()
    wait_for(lambda: trained_steps(cut.dir) >= 30, 600, "the two-node job to pass step 30")
    job = jobs(cut.dir)[0]["job_id"]
    # what --signal=USR1@T sends before the time limit (and a preempting scheduler with it)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_for(lambda: slurm_job(job).get("Restarts") == "1", 120, "the job to requeue itself")
    for t in threads:
        t.join(timeout=900)
    assert rcs == {"whole": 0, "cut": 0}, logs

    assert [j["job_id"] for j in jobs(cut.dir)] == [job]  # requeued, not resubmitted
    assert jobs(cut.dir)[0]["restarts"] == 1 and jobs(cut.dir)[0]["state"] == "COMPLETED"
    assert slurm_job(job)["Restarts"] == "1"
    (k,) = resumed_steps(cut.dir)
    assert 30 <= k < steps
    out = next(cut.dir.glob("slurm-train-*.out")).read_text()
    assert "preempted (rc 75): scontrol requeue" in out
    # both ranks (one per node) saw the signal, stopped at the same step and checkpointed
    assert out.count(f"preempted by signal {int(signal.SIGUSR1)} after {k} steps") == 2, out[-3000:]
    # the preemption checkpoint holds both ranks' state (each rank writes its own RNG state)
    ckpt = cut.dir / "checkpoints" / f"step_{k:08d}"
    assert (ckpt / "random_states_0.pkl").exists() and (ckpt / "random_states_1.pkl").exists()
    assert_ran_on_two_nodes(cut.dir, job)
    a = assert_ran_on_two_nodes(whole.dir, jobs(whole.dir)[0]["job_id"])
    b = json.loads((cut.dir / "train_metrics.json").read_text())
    assert b["resumed_from_step"] == k and b["steps"] == steps == a["steps"] and b["tokens"] == a["tokens"]
    assert [r["step"] for r in b["curve"]] == [r["step"] for r in a["curve"]]
    for (name, x), y in zip(weights(whole.dir).items(), weights(cut.dir).values()):
        assert torch.equal(x, y), name


# ------------------------------------------------------------------ (c) DeepSpeed ZeRO-3 over two nodes
RELOAD = r"""
import json, sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
d = Path(sys.argv[1])
probe = torch.load(d / "train_probe.pt")
model = AutoModelForCausalLM.from_pretrained(d / "model").eval()
with torch.no_grad():
    logits = model(input_ids=probe["input_ids"]).logits.float()
print(json.dumps({"equal": bool(torch.equal(logits, probe["logits"]))}))
"""


def test_zero3_job_over_two_nodes_saves_the_model_it_trained(two_nodes, prepared, tmp_path):
    at = attempt(tmp_path / "zero3", prepared, 20, strategy="zero3")
    two_nodes.append(at.run_dir)
    log: list[str] = []
    assert train_on_slurm(at, "zero3", log) == 0, log
    m = assert_ran_on_two_nodes(at.dir, jobs(at.dir)[0]["job_id"])
    assert m["strategy"] == "zero3" and m["distributed_type"] == "DistributedType.DEEPSPEED"
    assert m["curve"][-1]["loss"] < m["curve"][0]["loss"]
    # the weights gathered from both nodes' shards reload (in a fresh process) with the logits
    # the live sharded model gave
    p = subprocess.run([sys.executable, "-c", RELOAD, str(at.dir)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["equal"]
