"""`mlops` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlops import __version__
from mlops.errors import MlopsError


def _prepare_data(args: argparse.Namespace) -> None:
    from mlops.data.builtin import write_builtin_datasets
    from mlops.data.versioning import check_against_pin

    for path in write_builtin_datasets(Path(args.data_dir)):
        print(f"wrote {path}")
    dvc_file = Path(args.dvc_file)
    if dvc_file.exists():
        print(check_against_pin(dvc_file).describe(dvc_file))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    prepare = data.add_parser("prepare", help="write the built-in datasets (same bytes everywhere)")
    prepare.add_argument("--data-dir", default="data", help="where to write (default: data)")
    prepare.add_argument(
        "--dvc-file", default="data.dvc", help="pin to check the data against (default: data.dvc)"
    )
    prepare.set_defaults(handler=_prepare_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except MlopsError as error:
        print(f"mlops: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
