"""Train a classifier, track it as one MLflow run, register it as a new model version.

python pipelines/train.py model=rnn model.cell=lstm trainer.max_epochs=5
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from urllib.parse import quote

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from mlops import training
from mlops.config import register_resolvers
from mlops.distributed.sigterm import spawned_workers_stop_together
from mlops.errors import MlopsError
from mlops.messages import LOG, keep_in_job_log, tell
from mlops.models.family import model_family
from mlops.quiet import (
    artifact_progress_bars_only_when_asked,
    mlflow_notes_in_the_log_only,
    run_links_from_mlops_only,
)
from mlops.registry.aliases import ensure_reachable
from mlops.registry.description import describe
from mlops.registry.register import log_and_register, log_model
from mlops.team.accounts import refusal
from mlops.tracking.lineage import lineage_tags
from mlops.tracking.resume import check_resumable
from mlops.tracking.run import (
    build_mlflow_logger,
    log_config,
    log_environment,
    log_learning_curves,
    log_resume,
    ui_link,
)
from mlops.tracking.sweep import fail_sweep, nest_in_sweep

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
register_resolvers()  # before @hydra.main composes: conf/ uses them


def train(cfg: DictConfig) -> training.TrainingResult:
    training.check_launch(cfg)
    training.check_registry_config(cfg)
    ensure_reachable(cfg.logger.tracking_uri)  # a server that is down: said in seconds
    resume = training.resume_point(cfg)  # ckpt_path=...: continue that run, else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # 1. Data: read and validate before anything is created.
    datamodule = training.load_data(cfg)
    net = training.build_network(cfg, datamodule)
    module = training.build_classifier(cfg, net, datamodule.num_classes)
    model_name = training.registered_model_name(cfg, net)

    # 2. Tracking: one MLflow run carrying the config and the lineage; a resumed training
    #    continues its run, once the checkpoint is known to fit this data and config.
    tags = lineage_tags(
        root=Path(cfg.paths.root_dir),
        dvc_file=Path(cfg.paths.dvc_file),
        data_file=datamodule.path,
        overrides=training.hydra_overrides(),
        model_family=model_family(net),
    )
    resumed = resume and check_resumable(MlflowClient(cfg.logger.tracking_uri), resume, tags, cfg)
    if resumed:
        tags = resumed.lineage
    logger = build_mlflow_logger(
        cfg.logger,
        {**tags, "tags": ",".join(cfg.tags)},
        Path(cfg.paths.mlflow_artifacts_dir),
        run_id=resume and resume.run_id,
    )
    # The trainer knows the global rank (even before DDP starts its processes): only rank
    # zero creates the run, so N processes still make one run.
    trainer = training.build_trainer(cfg, logger, resume and resume.checkpoint.parent)
    sweep_run = None  # under -m: the sweep's MLflow run, this job's run nested in it
    if trainer.is_global_zero:
        if resumed:
            log_resume(logger, cfg, resume.step, resumed.resume_tags)
            log_environment(logger, resumed_at_step=resume.step)
        else:
            log_config(logger, cfg)
            log_environment(logger)
            sweep_run = nest_in_sweep(logger)

    # 3. Fit (from the checkpoint when resuming), then test the best checkpoint.
    try:
        with spawned_workers_stop_together(trainer):  # ddp_spawn: this process waits on them
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume and str(resume.checkpoint))
            metrics = training.metrics_as_floats(trainer)
            checkpoint = training.best_checkpoint(trainer)
            if cfg.test:
                trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint or None)
                metrics |= training.metrics_as_floats(trainer)

        # 4. Artifacts and registry, from global rank zero only.
        version, gate = None, None
        if trainer.is_global_zero:
            log_learning_curves(logger)  # the test's confusion matrix: the module logs it
            if cfg.register:
                training.load_tested_weights(module, checkpoint)
                version = log_and_register(
                    cfg.logger.tracking_uri,
                    logger.run_id,
                    module.net,
                    datamodule.splits.x_test[:5],
                    model_name,
                    {**tags, **(resumed.resume_tags if resumed else {})},
                    cfg.registry.serialization_format,
                    datamodule.classes,
                    datamodule.feature_names,
                )
                describe(
                    MlflowClient(cfg.logger.tracking_uri),
                    version,
                    training.summary_scores(metrics),
                    cfg.data.name,
                )
                # what monitoring compares the version's live traffic with
                training.log_reference_profile(
                    cfg.logger.tracking_uri, logger.run_id, version, datamodule, module.net
                )
                # 5. Promotion gate: challenger vs champion, evaluated from the registry.
                if cfg.registry.gate.enabled:
                    gate = training.promotion_gate(
                        cfg, cfg.logger.tracking_uri, datamodule, version
                    )
            elif cfg.get("log_model", False):  # the model in the run, no version
                training.load_tested_weights(module, checkpoint)
                log_model(
                    cfg.logger.tracking_uri,
                    logger.run_id,
                    module.net,
                    datamodule.splits.x_test[:5],
                    cfg.registry.serialization_format,
                    datamodule.classes,
                    datamodule.feature_names,
                )
    except BaseException:
        training.mark_run_failed(logger)  # unless the store is what failed
        if trainer.is_global_zero and (
            hint := training.resume_hint(trainer, training.hydra_overrides())
        ):
            tell(hint, warning=True)
        if sweep_run:
            fail_sweep(logger.experiment, sweep_run)
        raise
    finally:
        training.end_distributed()
    return training.TrainingResult(
        metrics=metrics,
        run_id=logger.run_id,
        experiment_id=logger.experiment_id,
        is_global_zero=trainer.is_global_zero,
        model_name=model_name,
        model_version=version and str(version.version),
        checkpoint_path=checkpoint,
        epochs=trainer.current_epoch,
        gate=gate,
    )


def report(result: training.TrainingResult, tracking_uri: str) -> None:
    tell(f"run {result.run_id}: {training.summary_scores(result.metrics)}")
    tell(f"  {ui_link(tracking_uri, f'experiments/{result.experiment_id}/runs/{result.run_id}')}")
    if result.model_version:
        tell(f"registered {result.model_name} version {result.model_version}")
        page = f"models/{quote(result.model_name)}/versions/{result.model_version}"
        tell(f"  {ui_link(tracking_uri, page)}")
    if result.gate:
        verdict = "promoted to @champion" if result.gate.decision.promote else "not promoted"
        tell(f"gate: {verdict}: {result.gate.decision.reason}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    artifact_progress_bars_only_when_asked()
    run_links_from_mlops_only()
    mlflow_notes_in_the_log_only()
    keep_in_job_log()  # train.log in the output folder, beside the console
    try:
        result = train(cfg)
        if not result.is_global_zero:  # rank zero reports for the whole job
            return None
        report(result, cfg.logger.tracking_uri)
        return training.optimized_value(cfg, result.metrics)  # for an optimizing sweeper
    except MlopsError as error:  # the user's to fix: the message says how, no traceback
        tell(f"error: {error}", warning=True)
        sys.exit(1)
    except MlflowException as error:  # a tracking server refusing this user: one line
        if refused := refusal(error, cfg.logger.tracking_uri):
            tell(f"error: {refused}", warning=True)
            sys.exit(1)
        LOG.exception("the job failed")
        raise
    except SIGTERMException:  # Lightning's stop on SIGTERM exits 0: say it was stopped
        sys.exit(128 + signal.SIGTERM)
    except Exception:  # Hydra prints the traceback; train.log keeps it beside the job's lines
        LOG.exception("the job failed")
        raise


if __name__ == "__main__":
    main()
