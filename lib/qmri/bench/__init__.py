"""Benchmarks on held-out phantoms: time and error per method, printed and saved as markdown + JSON."""
