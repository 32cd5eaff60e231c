"""Install the project into a virtual environment with uv, under pip's own settings.

pip took about 4 minutes to install the project's ~200 packages here, uv about 15 s
(docs/benchmarks.md, "Install"). uv reads no pip configuration, so the settings pip would
use (its config files and PIP_* variables: index URLs, find-links, constraints,
certificate, timeout) are read with `pip config list` and passed to uv as flags. A pip
setting with no uv equivalent here, or uv failing to install, falls back to pip itself, so
what is installed always honours the machine's configuration.

Runs on the interpreter that creates the venv (standard library only):
    python3 tools/install_venv.py .venv ".[test]"
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip settings that change nothing pip resolves or fetches, so uv may ignore them
NO_EFFECT_ON_RESOLUTION = {
    "disable-pip-version-check",
    "no-color",
    "no-input",
    "progress-bar",
    "quiet",
    "verbose",
    "root-user-action",
    "no-warn-script-location",
    "user-agent",
}


def pip_settings(pip: list[str]) -> dict[str, str]:
    """The settings pip would apply to `pip install`: its config files' `global` and
    `install` sections and PIP_* variables, the later overriding the earlier as in pip."""
    listed = subprocess.run(
        [*pip, "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    order = {"global": 0, "install": 1, ":env:": 2}
    ranked: dict[str, tuple[int, str]] = {}
    for line in listed.splitlines():
        section_key, _, value = line.partition("=")
        section, _, key = section_key.rpartition(".")
        if section not in order or not value:
            continue
        value = value.strip().strip("'\"")
        if key not in ranked or order[section] >= ranked[key][0]:
            ranked[key] = (order[section], value)
    return {key: value for key, (_, value) in ranked.items()}


def uv_arguments(settings: dict[str, str]) -> tuple[list[str], dict[str, str], list[str]]:
    """uv's flags and environment for pip's `settings`, and the settings it cannot honour.

    pip takes the best version across all its indexes; uv, by default, the first index that
    has the package: `unsafe-best-match` is pip's behaviour. pip also compiles bytecode."""
    flags = ["--index-strategy", "unsafe-best-match"]
    # pip writes the .pyc files at install and uv does not: where PYTHONDONTWRITEBYTECODE
    # is set (as on these machines), every process would compile torch and MLflow from
    # source again (the suite took 15.6 min instead of 9)
    flags.append("--compile-bytecode")
    env: dict[str, str] = {}
    unmapped: list[str] = []
    for key, value in settings.items():
        values = value.split()
        if key == "index-url":
            flags += ["--index-url", values[0]]
        elif key == "extra-index-url":
            for url in values:
                flags += ["--extra-index-url", url]
        elif key == "find-links":
            for location in values:
                flags += ["--find-links", location]
        elif key == "constraint":
            for path in values:
                flags += ["--constraint", path]
        elif key == "no-index" and value.lower() in ("1", "true", "yes", "on"):
            flags.append("--no-index")
        elif key == "trusted-host":
            for host in values:
                flags += ["--allow-insecure-host", host]
        elif key == "cert":
            env["SSL_CERT_FILE"] = value
        elif key in ("timeout", "default-timeout"):
            env["UV_HTTP_TIMEOUT"] = value
        elif key not in NO_EFFECT_ON_RESOLUTION:
            unmapped.append(f"{key}={value}")
    return flags, env, unmapped


# packages the project no longer uses whose presence in an older .venv would break it:
# hydra-optuna-sweeper registers a Hydra sweeper built for optuna 2, which optuna 4 breaks
DROPPED = ("hydra-optuna-sweeper",)


def remove_dropped(pip: list[str], log) -> None:
    installed = subprocess.run([*pip, "list", "--format=freeze"], capture_output=True,
                               text=True).stdout.lower()  # fmt: skip
    stale = [name for name in DROPPED if f"{name}==" in installed]
    if stale:
        subprocess.run([*pip, "uninstall", "-y", *stale], stdout=log, stderr=subprocess.STDOUT)


def install(venv: Path, requirement: str, log) -> None:
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip"]
    settings = pip_settings(pip)
    flags, env, unmapped = uv_arguments(settings)
    run = dict(stdout=log, stderr=subprocess.STDOUT)
    remove_dropped(pip, log)
    if unmapped:
        print(f"pip settings uv has no equivalent for: {', '.join(unmapped)}", file=log)
    else:
        print(f"pip settings for uv: {shlex.join(flags)} {env}", file=log, flush=True)
        got_uv = subprocess.run([*pip, "install", "uv"], **run).returncode == 0
        if got_uv:
            uv = [str(venv / "bin" / "uv"), "pip", "install", "--python", python, *flags]
            done = subprocess.run(
                [*uv, "-e", requirement], env={**os.environ, **env}, **run
            ).returncode
            if done == 0:
                return
        print("uv could not install the project: installing with pip", file=log, flush=True)
    subprocess.run([*pip, "install", "-e", requirement], check=True, **run)


def main() -> int:
    venv, requirement = Path(sys.argv[1]), sys.argv[2]
    with open(venv / "install.log", "w") as log:
        try:
            install(venv, requirement, log)
        except subprocess.CalledProcessError:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
