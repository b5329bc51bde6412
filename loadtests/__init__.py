"""greenpool's load-test harness: target servers, locustfiles and a bounded runner.

Run ``python -m loadtests.run --help`` (or ``make loadtest``). The runner never
imports locust itself: locust monkey-patches at import, so it runs in its own
process, and so does every target server.
"""
