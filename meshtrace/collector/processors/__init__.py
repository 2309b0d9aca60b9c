"""The collector's trace processors, one folder per type (config + factory + the processor):
`batch`, `memory_limiter`, `probabilistic_sampler`, `tail_sampling`. `base` holds what they share:
the processor base class (next consumer, the incoming/outgoing item counters) and a factory."""
