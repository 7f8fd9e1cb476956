"""otfuzz: protocol robustness testing for industrial control systems, with IEC 62443 evidence."""

__version__ = "0.1.0"
