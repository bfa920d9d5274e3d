"""Real time: waiting for pending tasks, Server-Sent Events, and what wakes them.

- ``scope``: who listens, what their stream carries, which changes concern them;
- ``hub``: this process's waiters, and the watcher that wakes them when day files grow;
- ``longpoll`` and ``stream``: waiting for pending tasks, and the event stream;
- ``sse``: the wire format of one event;
- ``offload``: blocking reads moved off the event loop.

Nothing here knows HTTP: the views are in ``taskpool.api.realtime``.
"""
