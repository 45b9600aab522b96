"""GB/T 28181 uplinks: the gateway registering upward to superior police platforms as a lower platform.

Core wiring, like the NATS bridge (not a device driver): each uplink reads the journal as one more
cursor (alarms, fixes, health), answers the superior from the supervisor's device table, and runs the
superior's commands through the gateway's command path with its own `control` grant and audit. It is
built on the GB/T 28181 listener's sans-io layers (`tianwang.drivers.gb28181`: sip, digest,
transaction, manscdp, catalog, ptz, datum, sdp, ids), never on the listener's sockets.

The room: ids.py (the 20-digit IDs of exposed devices), view.py (what the superior sees: catalog,
alarm fields, positions, status), link.py (one SIP link: client and server transactions over UDP
or TCP), uplink.py (one uplink: registration, keepalive, health, the journal cursor), requests.py
(the superior's queries and subscriptions, and the NOTIFYs inside them), commands.py (its controls
and calls through the gateway's command path, audited), manager.py (the uplinks of a config,
started, reloaded and stopped with the gateway), platform_sim.py (`tianwang simulate
gb28181-platform`, a superior platform for tests and the demo).
"""
