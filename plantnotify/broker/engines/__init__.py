"""Broker engines behind one contract (contract §2).

What differs between engines is kept to three things, each answered by the engine module:

* how a node is configured and run (``mosquitto``: one process with the plugin, in
  :mod:`plantnotify.broker.process`; ``nats``: a cluster, :mod:`plantnotify.broker.engines.nats`);
* how clients and services connect (:func:`mqtt_protocol`: MQTT 5 on Mosquitto, 3.1.1 on NATS);
* where presence comes from (the plugin's retained session snapshots, or NATS ``$SYS`` events).

Everything else (tokens, topics, events) is the same on every engine; the broker contract suite
(``tests/contract``) runs the same checks against each of them.
"""

from __future__ import annotations

from typing import Literal

Engine = Literal["mosquitto", "nats"]
ENGINES: tuple[Engine, ...] = ("mosquitto", "nats")

# The MQTT protocol level each engine speaks: NATS refuses MQTT 5 CONNECTs.
PROTOCOL: dict[Engine, Literal[4, 5]] = {"mosquitto": 5, "nats": 4}


def mqtt_protocol(engine: Engine) -> Literal[4, 5]:
    """The MQTT protocol level our services and reference clients use on ``engine``."""
    return PROTOCOL[engine]
