"""DDP on CPU (gloo, 2 processes): still one run, one folder, one checkpoint, one version,
and test metrics that a single process reproduces from the registered weights."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from mlops.data.arrays import load_npz, save_npz_reproducibly
from mlops.data.files import FilesDataModule
from mlops.errors import LaunchError
from tests.conftest import BEST_IS_NOT_LAST, FAST, KNOWN_CHATTER, ROOT, compose_config
from tests.registry_helpers import check_registered_from_best_checkpoint
from tests.servers import free_port, run_own_group


@pytest.fixture(scope="module")
def odd_test_split(digits_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with 269 test samples: 2 ranks cannot split it evenly, so a padding sampler
    would count one sample twice and change test/acc."""
    arrays = dict(load_npz(digits_file))
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:-1], arrays["y_test"][:-1]
    path = tmp_path_factory.mktemp("odd") / "digits.npz"
    save_npz_reproducibly(path, arrays)
    return path


def train_command(*overrides: str, multirun: bool = False) -> list[str]:
    script = [sys.executable, str(ROOT / "pipelines" / "train.py"), *(["-m"] if multirun else [])]
    return [*script, *FAST, "model=mlp", *overrides]


def check_two_processes(job: subprocess.CompletedProcess) -> None:
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in job.stdout + job.stderr, "did not run 2 processes"
    assert "per process set to SCHED_IDLE" in job.stdout + job.stderr  # gloo_polling.py
    assert job.stdout.count("registered digits-mlp version") == 1  # rank zero reports
    chatter = [line for line in KNOWN_CHATTER if line in job.stdout + job.stderr]
    assert not chatter, f"library chatter on the console: {chatter}"


def check_one_job(
    uri: str, output_dir: Path, data_file: Path, epochs: int = 2, best_is_not_last: bool = False
) -> None:
    """One run, one version, one folder with one checkpoint of each kind, the test
    accuracy a single process gets from the registered weights, and the run's plots; with
    `best_is_not_last` (a job given BEST_IS_NOT_LAST), registered weights that are the best
    checkpoint's, not the last."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs([experiment.experiment_id])
    training_runs = [r for r in runs if "mlops.run_type" not in r.data.tags]
    assert len(training_runs) == 1, [r.info.run_name for r in runs]
    run = training_runs[0]
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == epochs  # per epoch
    assert len(client.get_metric_history(run.info.run_id, "train/samples_per_sec")) == epochs

    versions = client.search_model_versions("name = 'digits-mlp'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == run.info.run_id

    # one best (registered) and one last (to resume), by rank zero only
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]

    # One process, registered weights, the whole test split: the same accuracy.
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri("digits-mlp", "1"))
    arrays = load_npz(data_file)
    predicted = np.asarray(model.predict(arrays["x_test"])).argmax(axis=1)
    accuracy = float((predicted == arrays["y_test"]).mean())
    assert run.data.metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    plots = {item.path for item in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    if best_is_not_last:
        cfg = compose_config(["model=mlp", f"data.path={data_file}"])
        checkpoints = output_dir / "checkpoints"
        check_registered_from_best_checkpoint(cfg, uri, "digits-mlp", checkpoints, arrays["x_test"])


# Lightning re-runs the script for rank 1; torchrun starts both ranks at once (and so both
# open the new sqlite store at the same moment), as in docs/distributed.md; ddp_spawn runs
# both ranks in processes it starts, and the job's own process only waits for them.
LAUNCHERS = {
    "lightning": [],
    "torchrun": [
        str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
    ],
    "spawn": [],
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_ddp_cpu_job_is_one_run_and_one_version(
    tmp_path: Path, odd_test_split: Path, launcher: str
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_dir = tmp_path / "logs"
    overrides = [
        "trainer=ddp_spawn_cpu" if launcher == "spawn" else "trainer=ddp_cpu",
        BEST_IS_NOT_LAST,
        f"data.path={odd_test_split}",
        f"logger.tracking_uri={uri}",
        f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}",
    ]
    if launcher == "torchrun":  # one folder name for both ranks, as the docs say
        overrides.append(f"hydra.run.dir={log_dir / 'train' / 'runs' / 'job'}")
        command = [*LAUNCHERS[launcher], *train_command(*overrides)[1:]]
    else:
        command = train_command(*overrides, f"paths.log_dir={log_dir}")
    job = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    check_two_processes(job)

    (output_dir,) = (log_dir / "train" / "runs").iterdir()
    check_one_job(uri, output_dir, odd_test_split, best_is_not_last=True)
    job_log = (output_dir / "train.log").read_text()  # the console's lines, with times
    assert "][mlops][INFO] - registered digits-mlp version 1" in job_log
    started = "][lightning.fabric.utilities.distributed][INFO] - Initializing distributed"
    if launcher != "spawn":  # spawned workers log to the console only
        assert started in job_log


def test_torchrun_on_two_nodes_is_one_run_and_one_version(
    tmp_path: Path, odd_test_split: Path
) -> None:
    """docs/distributed.md's multi-node torchrun recipe, the two "nodes" on this machine:
    one agent per node, each with one process, the same command but its --node_rank."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "logs" / "train" / "runs" / "job"
    port = free_port()
    training = train_command(
        "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
        f"data.path={odd_test_split}", f"logger.tracking_uri={uri}",
        f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}", f"hydra.run.dir={run_dir}",
    )[1:]  # fmt: skip
    agents = [
        [str(Path(sys.executable).parent / "torchrun"), "--nnodes=2", f"--node_rank={node}",
         "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", *training]
        for node in (0, 1)
    ]  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        jobs = list(pool.map(lambda agent: run_own_group(agent, ROOT, dict(os.environ)), agents))
    for job in jobs:
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    first, second = (job.stdout + job.stderr for job in jobs)
    assert "GLOBAL_RANK: 1" in second and "MEMBER: 2/2" in second
    assert first.count("registered digits-mlp version") == 1
    assert "registered digits-mlp version" not in second  # rank zero alone registers
    check_one_job(uri, run_dir, odd_test_split)


# srun on one machine: SLURM_NTASKS copies of the command, each given the variables SLURM
# sets per task (its rank, its rank on its node, its node), as if on SLURM_NNODES nodes.
LOCAL_SRUN = """#!/bin/bash
pids=()
for ((rank = 0; rank < SLURM_NTASKS; rank++)); do
    SLURM_PROCID=$rank SLURM_LOCALID=$((rank % SLURM_NTASKS_PER_NODE)) \\
        SLURM_NODEID=$((rank / SLURM_NTASKS_PER_NODE)) "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def test_sbatch_job_on_two_nodes_stops_on_sigterm_and_resumes_when_requeued(
    tmp_path: Path, odd_test_split: Path
) -> None:
    """pipelines/train_ddp.sbatch as SLURM runs it for 2 nodes x 1 task (CPU instead of
    GPUs): Lightning takes ranks, nodes and address from SLURM's variables. SLURM stops a
    job with SIGTERM to every process, and runs the script again with the same job id when
    it requeues it: the job continues its run from its last.ckpt."""
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text(LOCAL_SRUN)
    srun.chmod(0o755)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    slurm = {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mlops-ddp", "SLURM_SUBMIT_DIR": str(ROOT),
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NODELIST": "127.0.0.1",
        "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "1",
    }  # fmt: skip
    env = {
        **os.environ,
        **slurm,
        "PATH": f"{srun.parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),  # the stopping callback lives in tests/
        "MLFLOW_TRACKING_URI": uri,
        "MASTER_PORT": str(free_port()),  # SLURM's would come from the job id
        "MLOPS_RUN_DIR": str(tmp_path / "logs" / "slurm-4242"),  # not the project's logs/
    }
    sbatch = [
        "bash", str(ROOT / "pipelines" / "train_ddp.sbatch"), "trainer.accelerator=cpu", *FAST,
        "trainer.max_epochs=4", "model=mlp", f"data.path={odd_test_split}",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.mlflow_artifacts_dir={tmp_path / 'art'}",
    ]  # fmt: skip
    stop = [
        "+callbacks.stop._target_=tests.test_resume.TerminateAtEpoch",
        "+callbacks.stop.epoch=1",
        "+callbacks.stop.every_process=true",
    ]
    stopped = run_own_group([*sbatch, *stop], cwd=tmp_path, env=env)
    assert "stopping every process at the end of this epoch" in stopped.stdout + stopped.stderr
    assert "registered" not in stopped.stdout, stopped.stdout[-3000:] + stopped.stderr[-3000:]

    requeued = run_own_group(sbatch, cwd=tmp_path, env={**env, "SLURM_RESTART_COUNT": "1"})
    check_two_processes(requeued)
    output_dir = tmp_path / "logs" / "slurm-4242"
    assert f"resuming from {output_dir}/checkpoints/last.ckpt" in requeued.stdout
    check_one_job(uri, output_dir, odd_test_split, epochs=4)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("MLFLOW_TRACKING_URI", "set MLFLOW_TRACKING_URI to a tracking server"),
        (".venv", "submit from the project's root"),
    ],
)
def test_sbatch_script_names_what_it_misses(tmp_path: Path, missing: str, message: str) -> None:
    env = {
        **os.environ,
        "SLURM_CPUS_PER_TASK": "1",
        "SLURM_SUBMIT_DIR": str(tmp_path if missing == ".venv" else ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    if missing == "MLFLOW_TRACKING_URI":
        del env["MLFLOW_TRACKING_URI"]
    job = subprocess.run(
        ["bash", str(ROOT / "pipelines" / "train_ddp.sbatch")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert job.returncode == 1
    assert message in job.stderr


def test_ddp_under_multirun_fails_before_any_run(tmp_path: Path, digits_file: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = subprocess.run(
        train_command(
            "trainer=ddp_cpu", "seed=1,2", f"data.path={digits_file}",
            f"logger.tracking_uri={uri}", f"paths.log_dir={tmp_path / 'logs'}",
            multirun=True,
        ),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 1
    assert "use trainer=ddp_spawn_cpu" in job.stderr
    assert not MlflowClient(uri).search_experiments(filter_string="name = 'digits'")


@pytest.mark.parametrize("split", ["odd", "even"])
def test_evaluation_samples_are_split_across_ranks_without_repeats(
    digits_file: Path, odd_test_split: Path, split: str
) -> None:
    datamodule = FilesDataModule(
        name="digits", path=odd_test_split if split == "odd" else digits_file
    )
    seen: list[int] = []
    for rank in (0, 1):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        seen += list(datamodule.test_dataloader().sampler)
        seen_val = list(datamodule.val_dataloader().sampler)
        assert len(seen_val) in (
            len(datamodule.splits.y_val) // 2,
            len(datamodule.splits.y_val) // 2 + 1,
        )
    assert sorted(seen) == list(range(len(datamodule.splits.y_test)))


def test_ddp_under_a_sweep_is_allowed_where_slurm_started_every_process(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search's trial submitted as a SLURM job of N tasks (submitit_slurm): srun started
    each process, so Lightning re-runs nothing and DDP may run under the sweep."""
    from mlops import training
    from mlops.tracking.sweep import SweepJob

    monkeypatch.setattr(training, "current_sweep_job", lambda: SweepJob(Path("/tmp/s"), 0))
    cfg = make_cfg("trainer=ddp_cpu")
    for name in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    with pytest.raises(LaunchError, match="use trainer=ddp_spawn_cpu"):
        training.check_launch(cfg)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # as srun sets it for each task
    monkeypatch.setenv("SLURM_JOB_NAME", "digits-search")
    training.check_launch(cfg)
