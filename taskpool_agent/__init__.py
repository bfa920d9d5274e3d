"""taskpool-agent: the device side of a taskpool fleet.

It enrolls a device (``taskpool-agent enroll``), then runs (``taskpool-agent
run``): it waits for the tasks pending for the device, runs a handler for each
and answers. It needs only the standard library, not Django.

One idea per module: ``config`` (the config file), ``client`` (HTTP with
retries and backoff), ``journal`` (what was started, finished and answered, on
disk), ``runner`` (one handler process), ``agent`` (the main loop),
``enroll`` (joining the fleet), ``cli`` (the command line).
"""

__version__ = "0.1.0"
