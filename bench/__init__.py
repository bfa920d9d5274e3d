"""The benchmark suite: ``python -m bench [--quick] [--sizes N ...]``.

It writes realistic history into real day files, then measures, for each
size, what a device's ``GET /pool/pending`` costs through the whole stack,
against a naive baseline and an authenticated no-op view; how fast the index
is built at start-up, against a bare parse of the same lines; how much memory
the index takes; and how fast lines are appended, against raw ``os.write``
loops on the same disk. Each comparison is a ratio measured in the same run,
and each target of the issue is printed with PASS or FAIL.
"""
