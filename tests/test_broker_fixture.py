import socket

from tests.mosquitto import Broker


def test_broker_restarts_on_same_port(tmp_path):
    b = Broker(tmp_path / "b").start()
    port = b.port
    b.kill()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        refused = False
    except OSError:
        refused = True
    assert refused
    b.start()
    assert b.port == port
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    b.kill()
