# The app of the active version: started (`launch`) and stopped (`stop`) inside the agent.
#
# `launch` makes the version's directory the current one and puts "" first on `sys.path`, so
# the app's files are found by their own names (`app.py`); any module already loaded under a
# name the version's directory holds (an app shipping its own `mqtt.py` or `json.py`) is set
# aside for the app's life, so the app gets its own. Names starting with `huddle_` are the
# agent's and never set aside. The module named by `main` is imported and its `main()` called:
# a coroutine it returns runs as a task, a plain return means the app finished its work, an
# exception (at import, in `main()` or in the task) is recorded as the version's failure.
# While the app runs, `import socket` gives it a tracking stand-in (`Sockets`): every socket it
# opens, directly or through asyncio's streams and servers, is remembered, and `stop` cancels
# the asyncio tasks still waiting on them and closes them, so a server the app left listening
# never keeps the next version from binding its port. `stop` cancels the app's task, drops
# every module the app loaded and puts back what was set aside.
import asyncio
import gc
import os
import socket
import sys

import huddle_http
from huddle_os import join, log, ticks_ms


class Sockets:
    # the `socket` module as the app sees it: the real one, except that `socket()` remembers
    # what it makes (closed ones are forgotten as new ones come)
    def __init__(self, real):
        self.real = real
        self.opened = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def socket(self, *args):
        s = self.real.socket(*args)
        self.opened = [o for o in self.opened if _is_open(o)]
        self.opened.append(s)
        return s


def _is_open(s):
    try:
        return s.fileno() >= 0
    except (AttributeError, OSError):  # a port without fileno: keep it until the stop
        return True


def launch(a):
    # starts the active version's app
    cfg = a.cfg
    a.trial = a.commit is not None and a.commit != a.state["good"]
    a.started_ms = ticks_ms()
    a.failures = 0
    a.healthy = a.error = None
    a.finished = False
    log("starting %s from %s%s" % (cfg["main"], a.active, " (on trial)" if a.trial else ""))
    # the app runs in its version's directory, imported through "" on sys.path: MicroPython
    # interns the name of every file it compiles for good, so "app.py" is one name for every
    # version where a full path per version would grow the heap at each update
    home = join(a.root, a.active)
    os.chdir(home)
    a.modules = tuple(sys.modules)  # (a tuple: half the RAM of a set)
    aside = a.aside = {}
    for name in os.listdir(home):
        name = name.rsplit(".", 1)[0]
        if name in sys.modules and name[:7] != "huddle_":
            aside[name] = sys.modules.pop(name)
    aside["socket"] = sys.modules.get("socket")  # None on MicroPython: a built-in module
    a.sockets = sys.modules["socket"] = Sockets(socket)
    sys.path.insert(0, "")
    # the app compiles now. MicroPython's parser starts every compile with a 1 KB stack that a
    # heap fragmented by the agent's run may not have in one piece: the chunk buffer's block
    # is lent to it, and allocated again once the compile is over
    huddle_http.release()
    gc.collect()
    try:
        r = __import__(cfg["main"]).main()
        if hasattr(r, "send") and hasattr(r, "throw"):
            a.task = asyncio.create_task(_run(a, r))
        else:
            a.finished = True
    except Exception as e:  # the app's own failure, to be reported and counted
        a.error = "%s at start: %s" % (type(e).__name__, e)
    try:
        huddle_http.chunk()
    except MemoryError:  # tried again at the next read
        pass
    a.note()


async def _run(a, coro):
    try:
        await coro
        a.finished = True
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the app crashed: recorded and counted, never kills the agent
        a.error = "%s: %s" % (type(e).__name__, e)


async def stop(a):
    # stops the app and undoes what launch changed; nothing to do when none runs
    task, a.task = a.task, None
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except BaseException:  # CancelledError or the app's last words: it is stopped
            pass
    if a.modules is None:
        return
    waiting = getattr(getattr(asyncio, "core", None), "_io_queue", None)  # MicroPython
    for s in a.sockets.opened:
        # a task still waiting on an app's socket (a server's accept loop) is cancelled,
        # so it closes and ends, then the socket is closed whatever the app did with it
        for t in waiting.map.get(id(s), ())[:2] if waiting else ():
            if t:
                t.cancel()
        try:
            s.close()
        except OSError:  # already closed or dead: closed is what we want
            pass
    if "" in sys.path:
        sys.path.remove("")
    os.chdir(a.root)
    for name in list(sys.modules):
        if name not in a.modules:
            del sys.modules[name]
    for name, module in a.aside.items():
        if module is not None:
            sys.modules[name] = module
    a.modules = a.aside = a.sockets = None
    a.finished = False
    await asyncio.sleep(0)  # the cancelled tasks run their cleanup now
