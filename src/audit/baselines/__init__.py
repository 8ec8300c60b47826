"""Baseline populations: stored fingerprints of independently trained models.

A population is a folder::

    population.json            name, description, seed, members (metadata)
    models/NAME/KIND.npz       one fingerprint per method kind (kilobytes to MBs)
    pairs.json                 per method: every member pair's similarity and,
                               for the within-pair tests, its p-value (the
                               population's null and calibration, cached)

Pairs of members form each method's empirical null; every pair's own
p-value is the population's calibration check.
"""

from audit.baselines.population import Member, Population, PairTable

__all__ = ["Member", "PairTable", "Population"]
