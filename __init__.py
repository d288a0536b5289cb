"""sentrycam: a live window into a neural network while it trains.

Import the parts you need: ``from sentrycam import capture``. This module stays
import-light on purpose, so that the trainer process only pays for what it uses.
"""

__version__ = "0.1.0"
