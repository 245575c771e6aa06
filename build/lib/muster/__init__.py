"""The muster command line: `muster up` and friends."""
