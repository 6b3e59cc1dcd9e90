"""GPU benchmarks and the one script run on a lent GPU machine (check.sh)."""
