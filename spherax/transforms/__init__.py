"""Building blocks: one optax ``GradientTransformationExtraArgs`` per module."""
