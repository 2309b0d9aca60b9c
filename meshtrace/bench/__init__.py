"""`meshtrace bench ...`: the benchmarks. Each prints a table with ratios against a baseline
measured in the same run (these machines are shared and noisy). Never used by tests for timing
(tests/faults runs the `faults` scenarios briefly and checks their counts, not their times)."""
