"""The audit engine: self-calibrating detectors that read each run's streams as they are stored
and raise alerts (see :mod:`.engine`, :mod:`.detectors`, :mod:`.alerts`, :mod:`.baselines`)."""
