"""gauntlet-jax: the Gauntlet incentive mechanism, JAX/TPU-native."""

__version__ = "0.1.0"
