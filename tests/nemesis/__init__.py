"""The nemesis harness (issue 40): randomised faults against a cluster of three nodes and
against the single server, clients that record everything they see, and a checker that
accounts for every message (docs/RELIABILITY.md). ``python -m tests.nemesis`` runs it;
``make nemesis`` runs it for ten minutes."""
