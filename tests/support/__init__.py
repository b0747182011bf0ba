"""Plain test helpers (no fixtures, no tests): imported by test modules and by ``tests/conftest.py``.

- ``env``: the repository path, shared data, skip-or-fail for missing prerequisites.
- ``media``: seeded synthetic images, encoded images, tiny video clips.
- ``live``: the real service on a loopback port (``serve``), the one wait-until-ready helper, polling, MJPEG reading.
- ``checks``: the JSON error envelope, metric samples, reliability figures.
- ``procs``: process resources from ``/proc``; ``rtsp``: the loopback RTSP test server.

Fixtures live in the ``conftest.py`` files; no test module imports another test module or a ``conftest``.
"""
