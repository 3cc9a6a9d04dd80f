"""``plantnotify auth-callout``: decides every connection to the NATS engine.

* :mod:`.rules`    our MQTT token and identity rules (the same as the Mosquitto plugin's)
* :mod:`.natsjwt`  the nkey-signed JWTs of the callout protocol (request in, user JWT out)
* :mod:`.ledger`   live connections per user, cluster-wide, from presence events
* :mod:`.service`  the NATS service (one per node, one queue group)
* :mod:`.cli`      the command
"""
