"""A new application process answers its first ``GET /pool/pending``: when, and what took how long.

``bench.database`` runs ``python -m bench.database_first_request`` in a fresh
interpreter with the benchmark's settings (``BENCH_POSTGRES_DATABASES``,
``BENCH_POOL_DATABASE`` naming the loaded pool) and ``BENCH_DEVICE_TOKEN``;
it prints one JSON line of wall-clock times (``time.time()``, comparable with
the parent's): when this module began, when ``django.setup()`` returned, when
the first answer came, and how long a second request took.
"""

import time

began = time.time()

import json  # noqa: E402 - after the first clock reading, on purpose
import os  # noqa: E402


def main() -> None:
    import django

    django.setup()
    set_up = time.time()
    from django.test import Client

    headers = {"Authorization": f"Bearer {os.environ['BENCH_DEVICE_TOKEN']}"}
    client = Client()
    response = client.get("/pool/pending", headers=headers)
    answered = time.time()
    if response.status_code != 200:
        raise SystemExit(f"GET /pool/pending answered {response.status_code}")
    tasks = len(response.json())
    started = time.perf_counter()
    client.get("/pool/pending", headers=headers)
    second = time.perf_counter() - started
    print(
        json.dumps(
            {
                "began": began,
                "set_up": set_up,
                "answered": answered,
                "tasks": tasks,
                "second_request": second,
            }
        )
    )


if __name__ == "__main__":
    main()
