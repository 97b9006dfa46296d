"""Benchmarks: one command per stage; each prints a table and writes JSON under bench/results/."""
