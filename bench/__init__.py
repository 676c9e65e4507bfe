"""Performance ratios of the sampler (not tests): run `python bench/sampler.py`."""
