"""Demo upstreams for `muster up`, tests and benchmarks; none of it is part of the aggregator."""
