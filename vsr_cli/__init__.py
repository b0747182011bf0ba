"""The ``vsr`` command: the top layer. It imports ``training``, ``service``, ``bench`` and ``vsr``; nothing imports it.

``vsr_cli.main`` parses the arguments and imports each subcommand's module lazily (``vsr serve`` never loads
training code); ``vsr_cli.upscale`` and ``vsr_cli.video`` are ``vsr upscale``, on the shared ``vsr.engine``.
"""
