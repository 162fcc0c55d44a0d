"""Thin click commands: observe -> plan -> apply -> render the result."""
