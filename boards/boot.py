# huddle boot shim, written to the board as boot.py by `huddle flash` on boards with Wi-Fi.
# MicroPython runs boot.py, then main.py (the huddle agent, reading device.json). This joins
# the network named in wifi.json (beside this file; flash writes it from the config's `wifi`
# and keeps it out of device.json) and waits a bounded time: the agent starts either way and
# its network steps fail and back off until the link is up (the WLAN driver keeps retrying).
def _join():
    import json
    import time

    try:
        with open("wifi.json") as f:
            w = json.load(f)
    except OSError:  # no wifi.json: this board reaches the network another way
        return
    import network

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password") or "")
        t0 = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 20000:
            time.sleep_ms(200)
    print("huddle: wifi " + ("connected" if sta.isconnected() else "not connected yet"))


_join()
del _join
