"""Offline evaluation: held-out splits, full-ranking metrics, baselines, reports and the gate.

Everything here works in an integer item-index space (``0..n_items-1``) over per-user
chronological histories, so the transformer, the baselines and any future model are scored by
the same code on the same targets. ``splits`` builds the held-out targets, ``metrics`` ranks every
item for every user and summarises, ``baselines`` holds most-popular and Spark ALS, ``report``
writes the tables and plots, ``gate`` moves the registry's ``champion`` alias, and ``movielens``
runs the public benchmark.
"""
