"""Real protocol servers that tests start on loopback, and helpers to start and stop them."""
