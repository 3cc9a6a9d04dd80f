"""JWT authentication and per-user topic rules for amqtt, mirroring our Mosquitto plugin.

amqtt ships ``amqtt.contrib.jwt.UserAuthJwtPlugin``, but it cannot read our tokens (it checks no
``aud``, so PyJWT refuses a token that carries one) and it has no per-user topic rule. For the
comparison to be fair, amqtt does the same work per connection and per message as our C plugin:
verify HS256, ``aud``, ``exp``, ``sub`` == username, client id ownership; allow a user only its own
``users/{sub}/`` topics; the ``service`` role may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from plantnotify.contracts.claims import (
    CLAIM_EXPIRES,
    CLAIM_ROLE,
    CLAIM_SUBJECT,
    ROLE_SERVICE,
)
from plantnotify.contracts.ids import is_valid_client_id, is_valid_user_id
from plantnotify.contracts.topics import receipts_topic, user_root

# The verified identity is kept in the session's plugin attributes: amqtt calls topic_filtering
# for every message, and the C plugin keeps it per client too, so neither re-verifies per message.
_IDENTITY = "plantnotify.identity"


class JwtAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        secret: str = ""
        audience: str = "plantnotify-mqtt"

    async def authenticate(self, *, session: Session) -> bool | None:
        if not session.username or not session.password:
            return False
        try:
            claims = jwt.decode(
                session.password,
                self.config.secret,
                algorithms=["HS256"],
                audience=self.config.audience,
                options={"require": [CLAIM_EXPIRES, CLAIM_SUBJECT]},
                leeway=5,
            )
        except jwt.InvalidTokenError:
            return False
        sub = claims.get(CLAIM_SUBJECT)
        if not isinstance(sub, str) or sub != session.username or not is_valid_user_id(sub):
            return False
        if not session.client_id or not is_valid_client_id(sub, session.client_id):
            return False
        session.attributes[_IDENTITY] = (sub, claims.get(CLAIM_ROLE) == ROLE_SERVICE)
        return True


class UserTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or topic is None:
            return False
        identity: tuple[str, bool] | None = session.attributes.get(_IDENTITY)
        if identity is None:
            return False
        user_id, service = identity
        if service:
            return True
        if action is Action.PUBLISH:
            return topic == receipts_topic(user_id)
        return topic.startswith(user_root(user_id) + "/")
