"""aragog-sim: the serving stack's scheduling on simulated time (core.py), for pools and
traffic the live stack on one machine cannot reach. EMULATED pool, real scheduling code."""
