"""Plain test helpers (no fixtures, no tests): imported by test modules and by ``tests/conftest.py``.

- ``env``: the repository path, shared data, skip-or-fail for missing prerequisites.
- ``media``: seeded synthetic images, encoded images, tiny video clips.
- ``live``: the real service on a loopback port (``serve``), the one wait-until-ready helper, polling, MJPEG reading.
- ``checks``: the JSON error envelope, metric samples, reliability figures.
- ``procs``: process resources from ``/proc``; ``rtsp``: the loopback RTSP test server (and a PyAV reader of it).
- ``reference``: what a model's output should be (the plain forward pass on the artifact's weights) and the check
  every user path uses (within the path's codec tolerance, clearly apart from nearest, bicubic and flat frames).
- ``threads``: helper threads whose exceptions reach the test; ``timing``: wall-clock bounds stretched by the CPU
  contention measured at the moment (never a speed threshold).

Fixtures live in the ``conftest.py`` files; no test module imports another test module or a ``conftest``.
"""
