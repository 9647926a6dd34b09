"""One exception type for every bad input robovla rejects.

The CLI and the server turn it into a one-line message (exit code 2 / HTTP 4xx), so its text must name the
problem and, where it helps, the valid choices.
"""


class RobovlaError(ValueError):
    """Bad input detected at a boundary (file, checkpoint, image, instruction, name)."""
