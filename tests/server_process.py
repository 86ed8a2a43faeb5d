"""Starting ``jina-local-rerank serve`` as a real process on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command() -> list[str]:
    """The installed console script next to this interpreter, else the same entry point through ``-m``."""
    script = Path(sys.executable).with_name("jina-local-rerank")
    if script.is_file():
        return [str(script), "serve"]
    found = shutil.which("jina-local-rerank")
    return [found, "serve"] if found else [sys.executable, "-m", "jina_local_rerank.cli", "serve"]


def start_server(model: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """Start ``jina-local-rerank serve`` on a free loopback port and wait until ``/health`` answers."""
    port = free_port()
    command = [*serve_command(), "--model", str(model), "--device", "cpu", "--port", str(port), *args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment.pop("JINA_LOCAL_RERANK_API_KEY", None)  # the key comes from ``env`` or a flag, never the caller
    environment.update(env or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"server did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text()}")
