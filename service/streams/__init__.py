"""Live streams: a reader thread per source (PyAV), frames offered to the shared batcher, newest output as JPEG.

- :mod:`.config`: what a stream is (``StreamSpec``) and the knobs shared by all streams (``StreamOptions``).
- :mod:`.capture`: the reader thread (connect, decode, reconnect with backoff).
- :mod:`.pump`: the pump thread: pending slot -> batcher -> newest output (staying live).
- :mod:`.stats`: a stream's counters, for the API and Prometheus at once.
- :mod:`.info`: what ``GET /stream/{id}`` answers, built from those counters.
- :mod:`.output`: the newest encoded frame, shared by every viewer.
- :mod:`.publish`: the upscaled frames pushed to a media server (H.264).
- :mod:`.pipeline`: one stream, composing reader, pump, counters and publisher.
- :mod:`.manager`: all streams of the service (cap, start/stop with the app).
"""
