"""GB/T 28181 video networking: the platform side (devices register to the gateway)."""
