"""The nkeys of the NATS engine, derived from JWT_SECRET (nothing new to configure or store).

Four key pairs, each from HMAC-SHA256(JWT_SECRET, purpose):

* ``issuer``   an account key: the auth callout signs its answers (and the user JWTs) with it;
               the nodes' configuration holds its public key only;
* ``callout``  the user the auth-callout service connects as (bypasses the callout);
* ``system``   a user of the system account: presence events and CONNZ snapshots;
* ``feed``     a user of the APP account for the auth callout: the API's revocation lines
               (``$CONTROL.plantnotify.revocations``) and its requests for them (bypasses the
               callout; may do nothing else).

Node configurations contain public keys only, so a node needs no secret at all; the auth
callout and the services that read presence derive the seeds from the same JWT_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import nkeys

_DOMAIN = b"plantnotify-nats-v1:"


def _seed(secret: str, purpose: str, prefix: int) -> bytes:
    raw = hmac.new(secret.encode(), _DOMAIN + purpose.encode(), hashlib.sha256).digest()
    return bytes(nkeys.encode_seed(raw, prefix))


@dataclass(frozen=True)
class NatsKey:
    seed: bytes  # the encoded seed ("S..."), a secret

    @property
    def keypair(self) -> nkeys.KeyPair:
        return nkeys.from_seed(self.seed)

    @property
    def public(self) -> str:
        return str(self.keypair.public_key.decode())

    @property
    def seed_str(self) -> str:
        return self.seed.decode()


@dataclass(frozen=True)
class NatsKeys:
    issuer: NatsKey
    callout: NatsKey
    system: NatsKey
    feed: NatsKey

    @classmethod
    def derive(cls, secret: str) -> NatsKeys:
        return cls(
            issuer=NatsKey(_seed(secret, "callout-issuer", nkeys.PREFIX_BYTE_ACCOUNT)),
            callout=NatsKey(_seed(secret, "callout-user", nkeys.PREFIX_BYTE_USER)),
            system=NatsKey(_seed(secret, "system-user", nkeys.PREFIX_BYTE_USER)),
            feed=NatsKey(_seed(secret, "revocations-user", nkeys.PREFIX_BYTE_USER)),
        )
