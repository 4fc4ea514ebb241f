"""Layer 0: utilities every other module may use; imports nothing else from this repository."""
