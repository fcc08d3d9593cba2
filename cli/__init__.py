"""The `clipmod` command line: the composition root that wires the domain to its front ends.

It is the only package that may import `api` and `workers` together (to run them), so the domain
package `clipmod` stays free of both. Each subcommand group lives in its own module and adds
itself to the parser with `register(subparsers)`.
"""
