"""Campaigns: the marketer's own timing - one message to a segment, at a moment that is an
instant or a wall-clock time in each subscriber's own time zone.

- ``body``: the POST /v1/campaigns body, checked and compiled (pure);
- ``plan``: one fan-out tick, which time zones are due (pure);
- ``experiment``: the body's ``experiment`` and who is in its test share (pure);
  ``decide``: an experiment's fan-out tick - the test share, the decision, the rest;
- ``usecases``: create, dry run, results, cancel on the store, called by the admin API
  (service/api/campaigns.py) and the CLI (service/cli/campaigns.py) alike;
- ``models``: what the use cases return, which both render.

Nothing is imported here: importing the API must not load the rules engine (``body`` is
loaded with the first campaign checked).
"""
