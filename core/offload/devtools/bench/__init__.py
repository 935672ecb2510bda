"""``offload bench``: the decision engine measured on loopback, side by side with the original's policies."""
