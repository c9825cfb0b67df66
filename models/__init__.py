"""retention-scorer domain: pure Python, no Kafka or Faust imports.

Everything the engine knows about a customer is computed here from events, so it can be
replayed over a file with the same answer every time. See ``docs/ARCHITECTURE.md``.
"""
