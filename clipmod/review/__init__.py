"""Human review: people, their queue, claims, decisions, search and the audit log.

The dashboard (`api/dashboard/`) and the command line (`cli/users.py`) are thin layers over
these functions, so the rules (who may see what, who holds an item, what a decision supersedes)
live in one place and are tested against the real database without a browser.
"""
