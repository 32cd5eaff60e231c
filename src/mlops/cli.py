"""`mlops`: the model lifecycle from the command line: train, evaluate, compress, deploy,
serve, batch predictions, the registry.

Every command reads the Hydra config under --config-dir (default: ./conf, else the
project's conf/), whose logger.tracking_uri honours MLFLOW_TRACKING_URI; trailing
`key=value` arguments are Hydra overrides (e.g. data.path=...). Relative paths in the
config are relative to the folder it runs in.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import mlops
from mlops import __version__
from mlops.errors import ConfigError, MlopsError
from mlops.quiet import (
    artifact_progress_bars_only_when_asked,
    mlflow_notes_in_the_log_only,
    run_links_from_mlops_only,
)


def _prepare_data(args: argparse.Namespace) -> None:
    from mlops.data.builtin import write_builtin_datasets
    from mlops.data.versioning import check_against_pin

    for path in write_builtin_datasets(Path(args.data_dir)):
        print(f"wrote {path}")
    dvc_file = Path(args.dvc_file)
    if dvc_file.exists():
        print(check_against_pin(dvc_file).describe(dvc_file))


PROJECT = Path(mlops.__file__).resolve().parents[2]  # src/mlops/ -> the checkout's root
PIPELINE = PROJECT / "pipelines" / "train.py"


def default_config_dir() -> Path:
    """./conf where the command runs (the project root, as make runs it), else the project's
    own conf/ (an editable install: `mlops train` from any folder)."""
    here = Path("conf")
    if (here / "train.yaml").is_file() or not (PROJECT / "conf" / "train.yaml").is_file():
        return here
    return PROJECT / "conf"


def train_command(argv: list[str]) -> list[str]:
    """`python pipelines/train.py` with the config folder and every other argument (Hydra
    overrides, `-m` for a sweep, `--cfg job`, ...) as given."""
    parser = argparse.ArgumentParser(prog="mlops train", add_help=False, allow_abbrev=False)
    parser.add_argument("--config-dir", type=Path, default=None)
    known, hydra_args = parser.parse_known_args(argv)
    config_dir = known.config_dir or default_config_dir()
    if not (config_dir / "train.yaml").is_file():
        raise ConfigError(
            f"no train.yaml in the config folder {config_dir.resolve()}: run mlops from the "
            "project root, or pass --config-dir PATH"
        )
    if not PIPELINE.is_file():
        raise ConfigError(
            f"{PIPELINE} is missing: mlops train runs the project's pipeline, so install "
            "mlops from its checkout (make install: an editable install)"
        )
    return [sys.executable, str(PIPELINE), f"--config-path={config_dir.resolve()}", *hydra_args]


def _train(argv: list[str]) -> None:
    """Hydra's own main takes over the process, as `python pipelines/train.py` would."""
    command = train_command(argv)
    sys.stdout.flush()
    os.execv(command[0], command)


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def refuse_taken_port(host: str, port: int, command: str) -> None:
    """A server would fail on a taken port with a traceback: name the port and the fix."""
    if port_taken(host, port):
        raise ConfigError(f"port {port} on {host} is taken (an earlier mlops {command}?): "
                          f"stop it, or pass --port {port + 1}")  # fmt: skip


def _bento(args: argparse.Namespace, cfg) -> tuple[str, Path]:
    """The Bento named, or the last one mlops deploy built, and the BentoML store it is in."""
    # as mlops deploy stores it: BENTOML_HOME when set, else paths.bentoml_home
    home = Path(os.environ.get("BENTOML_HOME") or cfg.paths.bentoml_home)
    last = Path(cfg.paths.bento_build_dir) / "LAST_BENTO"
    if args.bento is None and not last.is_file():
        raise ConfigError(f"no Bento yet ({last} is missing): run mlops deploy (make deploy) first")
    return args.bento or last.read_text().strip(), home


def _bento_or_override(args: argparse.Namespace) -> None:
    if args.bento and "=" in args.bento:  # an override, taken by the optional positional
        args.overrides, args.bento = [args.bento, *args.overrides], None


def _k8s(args: argparse.Namespace) -> None:
    _bento_or_override(args)
    cfg = _config(args)
    tag, home = _bento(args, cfg)
    os.environ["BENTOML_HOME"] = str(home.resolve())
    from mlops.serving.kubernetes import bento_manifests, image_name

    settings = cfg.deploy.kubernetes
    path, documents, version = bento_manifests(settings, tag)
    kinds = ", ".join(d["kind"] for d in documents)
    print(f"{path}: {kinds} for {tag} (valid Kubernetes {version})")
    image = image_name(tag, settings.registry)
    push = f" && docker tag {tag} {image} && docker push {image}" if settings.registry else ""
    print(f"  image: make containerize{push}")
    volumes = documents[0]["spec"]["template"]["spec"]["volumes"]
    if any(v["name"] == "api-keys" for v in volumes):
        print(
            f"  keys:  kubectl -n {settings.namespace} create secret generic "
            f"{settings.keys_secret} --from-file=keys={cfg.deploy.auth.keys_file}"
        )
    print(f"  apply: kubectl apply -f {path}")


def _serve(args: argparse.Namespace) -> None:
    _bento_or_override(args)
    from mlops.serving.tls import serve_tls_arguments, tls_files

    cfg = _config(args)
    tag, home = _bento(args, cfg)
    host, port = args.host or cfg.deploy.host, int(args.port or cfg.deploy.port)
    tls = tls_files(cfg.deploy.get("tls"))
    refuse_taken_port(host, port, "serve")
    bentoml = Path(sys.executable).parent / "bentoml"
    command = [str(bentoml), "serve", tag, "--host", host, "--port", str(port),
               *serve_tls_arguments(tls)]  # fmt: skip
    scheme = "https" if tls else "http"
    print(f"serving {tag} on {scheme}://{host}:{port} (BENTOML_HOME={home.resolve()})", flush=True)
    os.execve(command[0], command, {**os.environ, "BENTOML_HOME": str(home.resolve())})


def _config(args: argparse.Namespace):
    """The composed config; a missing folder or a bad override is the user's to fix, in one
    line, as `make train` gives it (Hydra's own exceptions would print a traceback here)."""
    from hydra.errors import HydraException

    from mlops.config import compose_config

    config_dir = Path(args.config_dir) if args.config_dir else default_config_dir()
    if not (config_dir / "train.yaml").is_file():
        raise ConfigError(
            f"no train.yaml in the config folder {config_dir.resolve()}: run mlops from the "
            "project root (where conf/ is, as make does), or pass --config-dir PATH"
        )
    try:
        return compose_config(config_dir, list(args.overrides))
    except HydraException as error:
        message = str(error).split("Config search path")[0]  # Hydra's internals after it
        raise ConfigError(" ".join(message.split())) from None


def _client(cfg):
    from mlflow import MlflowClient

    from mlops.registry.aliases import ensure_reachable

    ensure_reachable(cfg.logger.tracking_uri)
    return MlflowClient(cfg.logger.tracking_uri)


def _evaluate(args: argparse.Namespace) -> None:
    from mlops import training
    from mlops.registry.aliases import parse_model_ref, resolve_version
    from mlops.registry.evaluate import (
        chooses_data,
        data_key_overrides,
        training_md5,
        with_training_data,
    )

    cfg = _config(args)
    client = _client(cfg)
    name, ref = parse_model_ref(args.model)
    version = resolve_version(client, name, args.version or ref or "@champion")
    as_trained = False
    changed = data_key_overrides(args.overrides)
    if chooses_data(args.overrides):
        source = "the data the overrides name"
    elif (trained := with_training_data(cfg, client, version, changed)) is None:
        source = "the configured data: the version's run logged no config"
    else:
        cfg, as_trained = trained, not changed
        source = f"the data version {version.version} was trained on"
        if changed:
            source += f", with {' '.join(changed)}"
    datamodule = training.load_data(cfg)
    evaluator = training.evaluator_for(cfg, client, datamodule)
    then = training_md5(client, version) if as_trained else None
    if then not in (None, evaluator.file_md5):
        print(f"warning: {datamodule.path} has changed since version {version.version} was "
              f"trained (md5 {then} then, {evaluator.file_md5} now)")  # fmt: skip
    evaluation = evaluator.evaluate(version)
    print(f"evaluated {name} version {evaluation.version} on {datamodule.path} ({source}; "
          f"data.dvc md5 {evaluation.data_md5}, file matches it: "
          f"{evaluation.data_matches_pin}) in run {evaluation.run_id}")  # fmt: skip
    for key, value in evaluation.metrics.items():
        if "/recall/" not in key:
            print(f"  {key} = {value:.4f}")


def _history(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import ensure_model
    from mlops.registry.show import history_table, print_table

    client = _client(_config(args))
    ensure_model(client, args.model)
    print_table(history_table(client, args.model))


def _show(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import parse_model_ref, resolve_version
    from mlops.registry.show import lineage_table, print_table

    client = _client(_config(args))
    name, ref = parse_model_ref(args.model)
    print_table(lineage_table(client, resolve_version(client, name, ref or "@champion")))


def _promote(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import promote

    move = promote(_client(_config(args)), args.model, args.version, args.reason)
    print(
        f"{args.model}: @champion {move.from_version or '-'} -> {move.to_version} ({move.reason})"
    )


def _rollback(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import rollback

    move = rollback(_client(_config(args)), args.model, args.reason)
    print(f"{args.model}: @champion {move.from_version} -> {move.to_version} ({move.reason})")


def _deploy(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import parse_model_ref
    from mlops.serving.deploy import deploy

    cfg = _config(args)
    name, ref = parse_model_ref(args.model)
    result = deploy(cfg, name, args.version or ref or cfg.deploy.version)
    print(
        f"built Bento {result.bento_tag} serving {name} version "
        f"{result.deployment.model_version} (BentoML model {result.bento_model_tag})"
    )
    print(f"serve it: make serve   (or: mlops serve {result.bento_tag})")


def _compress(args: argparse.Namespace) -> None:
    from mlops.compress.report import comparison_table
    from mlops.compress.run import compress
    from mlops.registry.aliases import parse_model_ref
    from mlops.registry.show import print_table

    cfg = _config(args)
    name, ref = parse_model_ref(args.model)
    result = compress(
        cfg, _client(cfg), name, args.version or ref or cfg.compress.version, args.overrides
    )
    title = f"{name} version {result.parent_version}: compressed in run {result.run_id}"
    print_table(comparison_table(title, result.rows, result.batch_size))
    for row in result.rows[1:]:
        if row.refusals:
            print(f"{row.variant} not registered: {'; '.join(row.refusals)}")


def _reproduce(args: argparse.Namespace) -> None:
    from mlops.errors import ReproductionDiffers
    from mlops.rebuild.reproduce import reproduce, reproduction_table
    from mlops.registry.aliases import parse_model_ref
    from mlops.registry.show import print_table

    cfg = _config(args)
    name, ref = parse_model_ref(args.model)
    result = reproduce(cfg, _client(cfg), name, args.version or ref or "@champion", args.register)
    print_table(reproduction_table(result))
    if result.predictions is not None:
        print(f"predictions: {result.predictions.describe()}")
    else:
        print("predictions: not compared (the version's commit cannot log a model without "
              "registering it: pass --register to compare a registered rebuild)")  # fmt: skip
    if result.config_differences:
        print("resolved config differs (the version's -> the rebuild's):")
        for line in result.config_differences:
            print(f"  {line}")
    else:
        print("resolved config: equal to the version's (where data, store and outputs are aside)")
    if result.registered_version:
        print(f"registered as {name} version {result.registered_version}")
    version = result.recipe.version
    if not result.matches:
        raise ReproductionDiffers(f"the rebuild differs from {name} version {version} (above); "
                                  f"its run: {result.run_id}")  # fmt: skip
    print(f"reproduced: {name} version {version} rebuilt from its lineage matches it")


def _retrain(args: argparse.Namespace) -> None:
    import time

    from mlops.monitoring.report import parse_since
    from mlops.rebuild.retrain import drift_reason, retrain
    from mlops.registry.aliases import parse_model_ref, resolve_version

    cfg = _config(args)
    client = _client(cfg)
    name, ref = parse_model_ref(args.model)
    ref = args.version or ref or "@champion"
    if args.if_drift:
        parent = resolve_version(client, name, ref)
        reason = drift_reason(client, name, str(parent.version))
        if reason is None:
            print(f"nothing to do: no monitoring report of {name} version {parent.version} "
                  "found drift or an accuracy drop (mlops monitor report writes one)")  # fmt: skip
            return
        print(f"retraining: {reason}")
    since = parse_since(args.since, time.time()) if args.since else 0.0
    result = retrain(cfg, client, name, ref, list(args.overrides), args.with_feedback, since)
    decision = result.gate.decision
    verdict = "promoted to @champion" if decision.promote else "not promoted"
    print(f"retrained {name} version {result.parent.version} as version {result.version} "
          f"(run {result.run_id}) on {result.data_file}")  # fmt: skip
    if result.feedback_samples:
        print(f"  {result.feedback_samples} fed-back samples trained on, {result.window_samples}"
              " kept as the recent window")  # fmt: skip
    print(f"gate: {verdict}: {decision.reason}")
    if result.commit_hint:
        print(f"new data version in data.dvc; record it: {result.commit_hint}")


def _predict(args: argparse.Namespace) -> None:
    from mlops.registry.aliases import parse_model_ref, resolve_version
    from mlops.serving.batch import default_output, predict_file

    client = _client(_config(args))
    name, ref = parse_model_ref(args.model)
    version = resolve_version(client, name, args.version or ref or "@champion")
    source = Path(args.input)
    result = predict_file(
        client, name, str(version.version), source, Path(args.output or default_output(source))
    )
    counts = ", ".join(f"{label}: {count}" for label, count in result.counts.items())
    print(f"wrote {sum(result.counts.values())} predictions of {name} version "
          f"{result.version} to {result.output} ({counts}), "
          f"recorded in run {result.run_id}")  # fmt: skip


def _monitor_prometheus(args: argparse.Namespace) -> None:
    from mlops.monitoring.prometheus import prepare_prometheus

    settings = _config(args).monitor
    host, port = settings.host, int(args.port or settings.port)
    refuse_taken_port(host, port, "monitor")
    server = prepare_prometheus(
        args.target or settings.target, Path(settings.rules_file), Path(settings.storage_dir),
        port, host, settings.scrape_interval, settings.evaluation_interval, settings.retention,
    )  # fmt: skip
    target = args.target or settings.target
    print(f"Prometheus on {server.url}, scraping {target}/metrics every "
          f"{settings.scrape_interval} with {Path(settings.rules_file)}\n"
          f"  drift, accuracy and alerts: {server.url}/alerts   "
          f"(query mlops:input_psi:1h, mlops:live_accuracy:1d, ...)\n"
          f"  config and samples: {server.storage_dir}", flush=True)  # fmt: skip
    command = server.command()
    os.execv(command[0], command)


def _monitor_report(args: argparse.Namespace) -> None:
    import time

    from mlops.errors import DriftFound
    from mlops.monitoring.report import parse_since
    from mlops.monitoring.report_run import findings_table, monitor_report
    from mlops.registry.aliases import parse_model_ref, resolve_version
    from mlops.registry.show import print_table

    cfg = _config(args)
    client = _client(cfg)
    name, ref = parse_model_ref(args.model)
    version = resolve_version(client, name, args.version or ref or "@champion")
    since = parse_since(args.since or str(cfg.monitor.report_since), time.time())
    payload_dir = Path(args.payload_dir or cfg.paths.payload_dir)
    result = monitor_report(client, version, payload_dir, since)
    print_table(findings_table(f"{name} version {version.version}", result.report))
    print(f"recorded in run {result.run_id} (artifacts monitoring/report.html, report.json)")
    drifted = [f["check"] for f in result.report["findings"] if f["status"] == "drift"]
    if drifted:
        raise DriftFound(f"drift in {name} version {version.version}: {', '.join(drifted)}")


def _keys(args: argparse.Namespace) -> None:
    from mlops.serving.auth import new_key, read_keys, revoke_key

    path = Path(args.keys_file or _config(args).deploy.auth.keys_file)
    try:
        if args.action == "new":
            key = new_key(path, args.name)
            print(f"key {args.name!r} (shown once; {path} keeps only its sha256):\n{key}\n"
                  f"send it as: Authorization: Bearer {key[:10]}...")  # fmt: skip
        elif args.action == "revoke":
            revoke_key(path, args.name)
            print(f"revoked {args.name!r}: a running service refuses it from its next request")
        else:
            for digest, name in read_keys(path).items():
                print(f"{name or '(unnamed)'}  {digest[:19]}...")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _server_start(stack) -> None:
    from mlops.team.stack import start_stack

    for line in start_stack(stack):
        print(line)
    print(f"\nteam members: export MLFLOW_TRACKING_URI={stack.tracking_url}\n"
          f"sweep workers: make sweep-worker STUDY=name (on any machine: "
          f"MLOPS_STUDY_STORAGE=$(mlops server url studies))\n"
          f"logs: {stack.dir / 'logs'}   stop: make server-stop")  # fmt: skip


def _server_dvc_remote(stack) -> None:
    from mlops.team.dvc_remote import configure_remote

    store = stack.object_store
    url = f"s3://{stack.settings.s3.bucket}/{stack.settings.s3.dvc_prefix}"
    configure_remote(Path.cwd(), "team", url, stack.s3_endpoint,
                     *((store.credentials.access_key, store.credentials.secret_key)
                       if store else ()))  # fmt: skip
    print(f"DVC remote 'team' (default): {url} on {stack.s3_endpoint}\n"
          "  .dvc/config holds the address (commit it); credentials are in "
          ".dvc/config.local (not committed)\n  then: dvc push, dvc pull")  # fmt: skip


def _server_user(stack, name: str, role: str) -> None:
    """As the admin: the environment's MLFLOW_TRACKING_USERNAME/PASSWORD, else the local
    stack's generated admin password."""
    from mlops.team.accounts import ADMIN, USERNAME, add_user, signed_in

    url = os.environ.get("MLFLOW_TRACKING_URI") or stack.tracking_url
    if os.environ.get(USERNAME):
        password = add_user(url, name, role)
    else:
        with signed_in(ADMIN, stack.auth_files.admin_password()):
            password = add_user(url, name, role)
    if password is None:
        print(f"user {name!r} is now an editor on {url}")
    else:
        print(f"user {name!r} ({role}) on {url}; password (shown once):\n{password}\n"
              f"sign in with: export MLFLOW_TRACKING_USERNAME={name} "
              "MLFLOW_TRACKING_PASSWORD=...")  # fmt: skip


def _server(args: argparse.Namespace) -> None:
    from mlops.team.stack import TeamStack, stack_status, stop_stack

    stack = TeamStack(_config(args).team)
    if args.action == "start":
        _server_start(stack)
    elif args.action == "dvc-remote":
        _server_dvc_remote(stack)
    elif args.action == "user":
        _server_user(stack, args.name, args.role)
    elif args.action == "url":  # for scripts: $(mlops server url studies)
        database = stack.settings.postgres.studies_database
        print(stack.database_url(str(database)) if args.which == "studies" else stack.tracking_url)
    elif args.action == "stop":
        stopped = stop_stack(stack)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    else:
        for part, running in stack_status(stack).items():
            print(f"{part:<12} {'running' if running else 'stopped'}")
        print(f"tracking server: {stack.tracking_url}")


def _with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--config-dir", help="Hydra config folder (default: ./conf, else the project's conf/)"
    )
    parser.set_defaults(overrides=[])  # filled from trailing key=value arguments by parse()
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        help="train, track and register: pipelines/train.py with Hydra overrides, -m to sweep",
        add_help=False,  # --help and every other argument go to Hydra
    )

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    prepare = data.add_parser("prepare", help="write the built-in datasets, check them against DVC")
    prepare.add_argument("--data-dir", default="data", help="where to write (default: data)")
    prepare.add_argument(
        "--dvc-file", default="data.dvc", help="pin to check against (default: data.dvc)"
    )
    prepare.set_defaults(handler=_prepare_data)

    evaluate = _with_config(
        commands.add_parser(
            "evaluate", help="score a registered version on the test split of its training data"
        )
    )
    evaluate.add_argument("model", help="registered model, optionally with @alias or /version")
    evaluate.add_argument("--version", help="version number or @alias (default: @champion)")
    evaluate.set_defaults(handler=_evaluate)

    predict = _with_config(
        commands.add_parser("predict", help="a registered version's predictions for a file")
    )
    predict.add_argument("model", help="registered model, optionally with @alias or /version")
    predict.add_argument("input", help=".csv (feature columns, by name) or .npz (array x)")
    predict.add_argument("--version", help="version number or @alias (default: @champion)")
    predict.add_argument("--output", help="CSV to write (default: predictions/<input name>.csv)")
    predict.set_defaults(handler=_predict)

    deploy = _with_config(
        commands.add_parser("deploy", help="build a Bento of a registered version")
    )
    deploy.add_argument(
        "model", nargs="?", help="registered model, optionally with @alias or /version"
    )
    deploy.add_argument("--version", help="version number or @alias (default: deploy.version)")
    deploy.set_defaults(handler=_deploy)

    compress = _with_config(
        commands.add_parser(
            "compress", help="ONNX and int8 variants of a registered version, gated and registered"
        )
    )
    compress.add_argument("model", help="registered model, optionally with @alias or /version")
    compress.add_argument("--version", help="version number or @alias (default: compress.version)")
    compress.set_defaults(handler=_compress)

    reproduce = _with_config(
        commands.add_parser(
            "reproduce", help="rebuild a version from its lineage and compare; exit 3 if it differs"
        )
    )
    reproduce.add_argument("model", help="registered model, optionally with @alias or /version")
    reproduce.add_argument("--version", help="version number or @alias (default: @champion)")
    reproduce.add_argument(
        "--register", action="store_true", help="register the rebuild as a new version (gated)"
    )
    reproduce.set_defaults(handler=_reproduce)

    retrain = _with_config(
        commands.add_parser(
            "retrain",
            help="the next version from a version's recipe on new "
            "or fed-back data, through the retrain gate",
        )
    )
    retrain.add_argument("model", help="registered model, optionally with @alias or /version")
    retrain.add_argument("--version", help="version number or @alias (default: @champion)")
    retrain.add_argument("--with-feedback", action="store_true",
                         help="add production's fed-back labels as a new data version")  # fmt: skip
    retrain.add_argument("--since", help="fed-back labels from: 90m, 12h, 7d or an ISO date")
    retrain.add_argument("--if-drift", action="store_true", help="only when the version's "
                         "last monitoring report found drift (for cron)")  # fmt: skip
    retrain.set_defaults(handler=_retrain)

    serve = _with_config(
        commands.add_parser("serve", help="serve a Bento (default: the last one deployed)")
    )
    serve.add_argument("bento", nargs="?", help="Bento tag (default: the last mlops deploy)")
    serve.add_argument("--host", help="default: deploy.host (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: deploy.port (3000)")
    serve.set_defaults(handler=_serve)

    k8s = _with_config(
        commands.add_parser("k8s", help="Kubernetes manifests of a Bento (default: the last one)")
    )
    k8s.add_argument("bento", nargs="?", help="Bento tag (default: the last mlops deploy)")
    k8s.set_defaults(handler=_k8s)

    monitor = commands.add_parser("monitor", help="watch a served version")
    watchers = monitor.add_subparsers(dest="action", required=True)
    prometheus = _with_config(
        watchers.add_parser(
            "prometheus", help="a Prometheus server scraping the service with the project's rules"
        )
    )
    prometheus.add_argument("--target", help="service host:port (default: monitor.target)")
    prometheus.add_argument("--port", type=int, help="Prometheus' port (default: monitor.port)")
    prometheus.set_defaults(handler=_monitor_prometheus)
    report = _with_config(
        watchers.add_parser(
            "report", help="drift report of a version's payload log, recorded in MLflow; "
            "exit 3 on drift",
        )
    )  # fmt: skip
    report.add_argument("model", help="registered model, optionally with @alias or /version")
    report.add_argument("--version", help="version number or @alias (default: @champion)")
    report.add_argument(
        "--since", help="90m, 12h, 7d or an ISO date (default: monitor.report_since)"
    )
    report.add_argument("--payload-dir", help="default: paths.payload_dir")
    report.set_defaults(handler=_monitor_report)

    keys = commands.add_parser("keys", help="API keys of served versions (deploy.auth)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    for action, text in (("new", "a new key, shown once"), ("revoke", "refuse a key from now"),
                         ("list", "the keys' names")):  # fmt: skip
        command = _with_config(key_actions.add_parser(action, help=text))
        if action != "list":
            command.add_argument("name", help="one word: the client the key is for")
        command.add_argument("--keys-file", help="default: deploy.auth.keys_file")
        command.set_defaults(handler=_keys)

    server = commands.add_parser(
        "server", help="the team stack: PostgreSQL, S3 and mlflow server (team.*)"
    )
    server_actions = server.add_subparsers(dest="action", required=True)
    for action, text in (
        ("start", "start what is not running (make server)"),
        ("stop", "stop the stack; its data stays (make server-stop)"),
        ("status", "which parts run"),
        ("dvc-remote", "the stack's S3 as the project's DVC remote"),
        ("url", "the tracking server's or the studies database's URL"),
        ("user", "a new account on the tracking server (team.auth.enabled), or an editor"),
    ):
        command = _with_config(server_actions.add_parser(action, help=text))
        command.set_defaults(handler=_server)
        if action == "url":
            command.add_argument("which", choices=("tracking", "studies"))
        if action == "user":
            command.add_argument("name", help="the account's name")
            command.add_argument("--role", choices=("reader", "editor"), default="reader",
                                 help="editor: may train, register and promote (default: "
                                 "reader, team.auth.default_permission)")  # fmt: skip

    registry = commands.add_parser("registry", help="aliases, history and lineage")
    actions = registry.add_subparsers(dest="action", required=True)
    history = _with_config(actions.add_parser("history", help="every alias move, as a table"))
    history.add_argument("model")
    history.set_defaults(handler=_history)
    show = _with_config(actions.add_parser("show", help="lineage of MODEL@alias or MODEL/version"))
    show.add_argument("model", help="e.g. digits-cnn@champion or digits-cnn/3")
    show.set_defaults(handler=_show)
    promote = _with_config(actions.add_parser("promote", help="make a version champion by hand"))
    promote.add_argument("model")
    promote.add_argument("version", help="version number or @alias")
    promote.add_argument("--reason", help="why (recorded in the history)")
    promote.set_defaults(handler=_promote)
    rollback = _with_config(
        actions.add_parser("rollback", help="champion back to the previous one")
    )
    rollback.add_argument("model")
    rollback.add_argument("--reason", help="why (recorded in the history)")
    rollback.set_defaults(handler=_rollback)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Hydra overrides (`key=value`, `+key=value`, `~key`) may come anywhere after the command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if not ("=" in a or a.startswith("~"))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(f"{args.command} takes no config overrides: {' '.join(extra)}")
    if extra:
        args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        try:
            _train(argv[1:])
        except MlopsError as error:
            print(f"mlops: error: {error}", file=sys.stderr)
            return error.exit_code
    args = parse(argv)
    artifact_progress_bars_only_when_asked()
    run_links_from_mlops_only()
    mlflow_notes_in_the_log_only()
    try:
        args.handler(args)
    except MlopsError as error:
        print(f"mlops: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # a tracking server's 401/403: one line, naming the need
        from mlops.team.accounts import refusal

        refused = refusal(error, os.environ.get("MLFLOW_TRACKING_URI", "(tracking server)"))
        if refused is None:
            raise
        print(f"mlops: error: {refused}", file=sys.stderr)
        return refused.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
