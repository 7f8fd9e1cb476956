"""The live dashboard: run folders watched read-only and served to a browser on loopback."""
