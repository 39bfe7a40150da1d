"""Benchmarking: device profiles, measurement through the runtime's runner process, projection, reports."""
