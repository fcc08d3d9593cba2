"""Alembic's scripts, shipped inside the wheel so `clipmod db upgrade` works from any install.

Not imported as code: `clipmod.bundled.MIGRATIONS` finds this folder and Alembic loads
`env.py` and `versions/` from it by path.
"""
