"""Live streams: a reader thread per source (PyAV), frames offered to the shared batcher, newest output as JPEG.

- :mod:`.config`: what a stream is (``StreamSpec``) and the knobs shared by all streams (``StreamOptions``).
- :mod:`.capture`: the reader thread (connect, decode, reconnect with backoff).
- :mod:`.output`: the newest encoded frame, shared by every viewer.
- :mod:`.pipeline`: one stream: reader -> pending slot -> batcher -> JPEG, with its counters.
- :mod:`.manager`: all streams of the service (cap, start/stop with the app).
"""
