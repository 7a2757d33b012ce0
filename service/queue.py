"""The queue's shared vocabulary: the NOTIFY channels that producers and consumers meet on.

Ingest (producer of signals), the worker (their consumer, producer of deliveries) and the
sender (consumer of deliveries) import these names from here, never from each other, so
importing the API loads nothing of the engine (model: arq's ``constants``).
"""

from __future__ import annotations

# Ingest NOTIFYs this after each committed batch of signals; workers LISTEN.
SIGNALS_CHANNEL = "momentcast_signals"
# Workers NOTIFY this after a batch that decided deliveries; senders LISTEN.
DELIVERIES_CHANNEL = "momentcast_deliveries"
