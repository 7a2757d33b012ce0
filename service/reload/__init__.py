"""Hot reload of rules/: the holder of the rule set in use (``holder``: swapped atomically on a
successful reload only) and what reloads it (``watch``: polling for changes, SIGHUP, and the
admin endpoint's reload). Not the engine: the engine compiles and evaluates a rule set, this
keeps one alive in a running process."""
