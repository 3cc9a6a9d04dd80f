"""Development stand-ins: what replaces N8N, FCM and a deployment on a developer's machine.

- ``n8n_standin``: ``plantnotify n8n-standin``, the local analyzer behind the N8N webhook;
- ``fcm_emulator``: ``plantnotify fcm-emulator``, FCM HTTP v1 (OAuth + messages:send);
- ``localstack``: ``plantnotify up``, the whole stack in the foreground;
- ``fake_n8n``, ``world``: a misbehaving N8N and rows/devices for the tests and benchmarks.

Production code (``plantnotify``, ``api``, ``worker``, ``bridge``) never imports this package;
the ``plantnotify`` CLI names these commands by module path and imports them only when run.
"""
