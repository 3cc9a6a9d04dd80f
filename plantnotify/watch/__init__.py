"""``plantnotify watch``: the reference device client.

What a mobile app does, in Python, so app teams have a working example to compare against:
log in through the API, get the realtime token, keep a *persistent* MQTT session (stable client
id ``<userId>-<device>``, clean start off, QoS 1) so events published while the device was
briefly offline arrive when it returns, send a receipt for every event, de-duplicate on
``eventId``, renew the token before it expires, and register an FCM token when given one.
"""
