"""The one place where the external contract (docs/contract.md) is spelled out in code.

api, worker, bridge and tests import topic builders, payload models, queue names and claim
names from here; no topic string or claim name is written anywhere else in Python.
"""
