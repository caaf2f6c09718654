"""Real NTP servers on loopback for tests and benchmarks: a scriptable responder and chronyd."""
