"""relayer's performance benchmarks, run side by side against a real broker.

``python -m benchmarks.run`` (``make bench``) runs every comparison and
writes ``benchmarks/RESULTS.md``; ``--smoke`` is the short version CI runs.
See ``benchmarks/README.md``.
"""
