"""huddle: a pull-based deployment agent for fleets of unknown size."""

__version__ = "0.2.0"
