"""Hooks for the B2B:Student pipeline: SIMS 7, SIMS Primary and the LA warehouse.

Import the hook modules directly (``b2b_hooks.sims7`` …); this package file stays
empty of imports so DAG parsing never pays for them.
"""
