"""Reports that read the store and write nothing: the backtest (``backtest``). The pure runs of
the engine they build on (service/rules/backtest.py, service/rules/replay.py) stay beside the
engine, since they are the engine over recorded signals; what needs the database lives here,
above the store, where the pure core may not reach."""
