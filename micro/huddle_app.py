# The app: imported from the active version, run beside the agent, health-checked.
#
# The contract: the agent puts the active version's directory first on `sys.path`, imports the
# module named by `main` and calls its `main()`. A coroutine it returns runs as an asyncio task
# beside the agent's own; a plain return means the app has finished its work (not a failure);
# an exception at import, in `main()` or in the task is a failure. `stop` cancels the task and
# forgets every module the app imported (a snapshot of `sys.modules` taken before the import),
# so the next version's modules of the same names are loaded fresh in the same process. An
# app that dies is noticed by huddle_health at its next interval.
import asyncio
import sys


class App:
    task = error = path = modules = None  # error: why the app failed, or None
    finished = False  # main() returned without a coroutine, or the task ended

    def __init__(self, module):
        self.module = module

    def start(self, version_dir):
        self.error = None
        self.finished = False
        self.path = version_dir
        self.modules = set(sys.modules)
        sys.path.insert(0, version_dir)
        try:
            result = __import__(self.module).main()
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

