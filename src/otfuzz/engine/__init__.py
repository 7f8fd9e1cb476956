"""Case generation, strategies, the campaign loop, confirmation and minimisation (protocol-agnostic)."""
