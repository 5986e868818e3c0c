"""The application: jobs built on the engine (the rest of `autocomp`), `search_spaces` and `agents`.

The search loop, its runners (one process, a shared study, Ray), tuning the search itself, run folders, the cached
baseline, the configuration file, reports and the command line. Nothing below this package imports it (the import
contracts in `.importlinter` hold this).
"""
