"""``plantnotify bench``: how fast, how many, at what cost, next to what users would pick instead.

Every scenario runs against real processes started by the bench itself on free ports (our
Mosquitto with the JWT plugin, plain Mosquitto, amqtt, a throwaway PostgreSQL database and
RabbitMQ vhost, the worker, bridge and API). Numbers are distributions and ratios from one run on
one machine, described in the results; targets are compared and printed, never asserted.
"""
