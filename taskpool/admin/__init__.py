"""The pool in the Django admin, one module per idea:

- ``dashboard``: the fleet at a glance, kept live from the pool's stream;
- ``devices``: the fleet (online, last seen, pending), validating, revoking and issuing tokens;
- ``roles``: pool roles, on their own and inline on the user admin;
- ``day_files``: every day file, a day's messages paged by cursor, one message, the raw file;
- ``tasks``: a day's tasks, a task's thread with its executions, sending and cancelling;
- ``access``: who may see what (read it first).
"""

from taskpool.admin import dashboard, day_files, devices, roles, tasks  # noqa: F401  (they register)
