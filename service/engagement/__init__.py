"""Engagement arithmetic, pure (no I/O, no clock): Beta posteriors and Thompson sampling
(bayes.py), the send-time choice (sendtime.py), the fatigue guard's rule (fatigue.py).
Campaigns, the engine and the statistics share it."""
