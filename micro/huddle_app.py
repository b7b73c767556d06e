"""The app: imported from the active version, run beside the agent, health-checked.

The contract: the agent puts the active version's directory first on `sys.path`, imports the
module named by `main` and calls its `main()`. A coroutine it returns runs as an asyncio task
beside the agent's own; a plain return means the app has finished its work (not a failure);
an exception at import, in `main()` or in the task is a failure. `stop` cancels the task and
forgets every module the app imported (a snapshot of `sys.modules` taken before the import),
so the next version's modules of the same names are loaded fresh in the same process.
`check` is the configured health probe: an HTTP GET whose status must be accepted, or a TCP
connect that sends `send` and expects `expect` in the reply; it returns None or a reason.
"""
import asyncio
import sys


class App:
    def __init__(self, module):
        self.module = module
        self.task = None
        self.error = None     # why the app failed, or None
        self.finished = False  # main() returned without a coroutine, or the task ended
        self.path = None
        self.modules = None
        self.on_exit = None    # called when the task ends or crashes (wakes the supervisor)

    def running(self):
        return self.task is not None and not self.finished and self.error is None

    def start(self, version_dir):
        self.error = None
        self.finished = False
        self.path = version_dir
        self.modules = set(sys.modules)
        sys.path.insert(0, version_dir)
        try:
            mod = __import__(self.module)
            result = mod.main()
        except Exception as e:  # the app's own failure, to be reported and counted
            self.error = "%s at start: %s" % (type(e).__name__, e)
            return
        if hasattr(result, "send") and hasattr(result, "throw"):
            self.task = asyncio.create_task(self._run(result))
        else:
            self.finished = True

    async def _run(self, coro):
        try:
            await coro
            self.finished = True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the app crashed: recorded, counted, never kills the agent
            self.error = "%s: %s" % (type(e).__name__, e)
        if self.on_exit:
            self.on_exit()

    async def stop(self):
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # CancelledError or the app's last words: it is stopped
                pass
        if self.path in sys.path:
            sys.path.remove(self.path)
        if self.modules is not None:
            for name in list(sys.modules):
                if name not in self.modules:
                    del sys.modules[name]
        self.modules = None
        self.finished = False


async def check(health):
    """None when healthy, else the reason."""
    kind = health["type"]
    host, port, timeout_s = health["host"], health["port"], health["timeout"]
    try:
        if kind == "http":
            from huddle_http import get
            resp = await get("http://%s:%d%s" % (host, port, health["path"]), timeout_s)
            await resp.close()
            if any(lo <= resp.status <= hi for lo, hi in health["status"]):
                return None
            return "health: HTTP %d from %s" % (resp.status, health["path"])
        if kind == "socket":
            return await _socket(host, port, health["send"], health["expect"], timeout_s)
    except Exception as e:  # any failure of the probe is a failed check, with its reason
        return "health: %s: %s" % (type(e).__name__, e)
    return None


async def _socket(host, port, send, expect, timeout_s):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        if send:
            writer.write(send.encode())
            await asyncio.wait_for(writer.drain(), timeout_s)
        if expect:
            want = expect.encode()
            got = b""
            while want not in got and len(got) < 1024:
                data = await asyncio.wait_for(reader.read(256), timeout_s)
                if not data:
                    return "health: %r not received" % expect
                got += data
            if want not in got:
                return "health: %r not received" % expect
        elif not send:
            # a bare connect: on MicroPython a refused connect only shows at the first I/O
            writer.write(b"")
            await asyncio.wait_for(writer.drain(), timeout_s)
        return None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout_s)
        except Exception:  # best effort close of a probe socket
            pass
