"""IEC 62443: the requirements catalogue and test mapping (data), verdicts, security levels."""
