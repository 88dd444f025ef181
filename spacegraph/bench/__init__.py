"""Benchmarks behind ``spacegraph bench``; each returns a JSON-ready record."""
