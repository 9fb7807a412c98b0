"""Training: optimizer, losses, pure step functions and the loop."""
