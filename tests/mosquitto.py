"""A real Mosquitto broker on a free loopback port, for tests and benchmarks.

`Broker(workdir).start()` writes a config, starts /usr/sbin/mosquitto (or the one on PATH),
waits for a TCP connect and fails fast (with the broker's log) if the process died. `stop()` /
`kill()` / `start()` again restart it on the same port, so tests can take the broker away
while agents keep working. Optional TLS listener with a CA/cert/key made by the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.gitutil import free_port as free_port  # test modules import it from here too


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto is not installed (make test installs it with apt-get)")


class Broker:
    def __init__(self, workdir: Path, port: int | None = None, tls: dict | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # mosquitto drops to user `mosquitto` as root: everything it reads must be readable
        os.chmod(self.workdir, 0o755)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = tls  # {"cafile":..., "certfile":..., "keyfile":...}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.tls:
            lines += [
                f"cafile {self.tls['cafile']}",
                f"certfile {self.tls['certfile']}",
                f"keyfile {self.tls['keyfile']}",
                "require_certificate false",
            ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        os.chmod(conf, 0o644)
        return conf

    def start(self, timeout_s: float = 10.0) -> Broker:
        conf = self._write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
