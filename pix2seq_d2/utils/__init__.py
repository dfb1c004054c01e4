"""Small helpers every other subpackage may use: the user-error base class, atomic file writes, telling
what a file is from its first bytes, the running trainer's iteration, and the seeds of exact resume."""
