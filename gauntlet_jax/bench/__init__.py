"""Benchmarks of the node's programs: timings and MFU on the local devices (`cli`: score, train,
compress, aggregate, one module each, over the shared `measure` and `inputs`), and ahead-of-time
compilation for a TPU topology (`tpu_compile`, `bench compile`)."""
