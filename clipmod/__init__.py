"""clipmod's domain: settings, persistence, policies and scoring.

Both the intake API (`api`) and the workers (`workers`) import this package and nothing of
each other, so a change to how a verdict is computed or stored happens in one place.
Importing it has no side effects: no connections, no model loads.
"""

__version__ = "0.1.0"
